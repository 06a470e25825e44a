"""Speaks through /v1/audio/speech with the official OpenAI Python client.

Usage: openai_speech.py BASE_URL OUT_WAV
Prints one JSON line: bytes received, seconds to the first chunk, and the
error the client raised for an unsupported format.
"""
import json
import sys
import time

import openai

base_url, out = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)

started = time.monotonic()
first = None
size = 0
with client.audio.speech.with_streaming_response.create(
    model="tts-1",
    voice="alloy",
    input="Hello from the official OpenAI client.",
    response_format="wav",
) as response:
    with open(out, "wb") as f:
        for chunk in response.iter_bytes():
            if first is None:
                first = time.monotonic() - started
            size += len(chunk)
            f.write(chunk)

try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="mp3")
    refused = None
except openai.BadRequestError as e:
    refused = {"status": e.status_code, "code": e.code, "param": e.param}

print(json.dumps({"bytes": size, "first_chunk_s": first, "refused": refused}))
