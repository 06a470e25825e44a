"""Speaks through /v1/audio/speech with the official OpenAI Python client,
in every format the endpoint serves, and asks for one it does not.

Usage: openai_speech.py BASE_URL OUT_DIR
Writes OUT_DIR/<format> for `default` (no response_format: OpenAI's
default), mp3, flac, wav, pcm and opus, each streamed; prints one JSON
line: bytes and seconds to the first chunk per format, and the error the
client raised for aac.
"""
import json
import os
import sys
import time

import openai

base_url, out_dir = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
TEXT = "Hello from the official OpenAI client."
# Without noise the voice is deterministic: every format carries the same
# samples, so the decoded audio can be compared.
QUIET = {"noise_scale": 0, "noise_w": 0}

formats = {}
for name in ["default", "mp3", "flac", "wav", "pcm", "opus"]:
    args = {} if name == "default" else {"response_format": name}
    started = time.monotonic()
    first = None
    size = 0
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, extra_body=QUIET, **args
    ) as response:
        content_type = response.headers.get("content-type")
        with open(os.path.join(out_dir, name), "wb") as f:
            for chunk in response.iter_bytes():
                if first is None:
                    first = time.monotonic() - started
                size += len(chunk)
                f.write(chunk)
    formats[name] = {"bytes": size, "first_chunk_s": first, "content_type": content_type}

try:
    client.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="aac")
    refused = None
except openai.BadRequestError as e:
    refused = {"status": e.status_code, "code": e.code, "param": e.param}

print(json.dumps({"formats": formats, "refused": refused}))
