// The page's audio output: a jitter buffer of 48 kHz samples, played by the
// audio thread in 128-sample quanta. Playback starts once the buffer holds
// `startMs` of audio; running dry while the stream is still live is an
// underrun (counted, then the buffer refills to `startMs` before resuming).
// `reset` drops whatever is buffered at once (Stop) and starts counting the
// next utterance's played time (`utteranceMs`) from zero.
class StreamPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.startSamples = Math.round((options.processorOptions.startMs / 1000) * sampleRate);
    this.chunks = [];
    this.offset = 0;
    this.buffered = 0;
    this.playing = false;
    this.ended = false;
    this.underruns = 0;
    this.played = 0;
    this.utterance = 0;
    this.quanta = 0;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "samples") {
        this.chunks.push(m.samples);
        this.buffered += m.samples.length;
        this.ended = false;
      } else if (m.type === "end") {
        this.ended = true;
      } else if (m.type === "reset") {
        this.chunks = [];
        this.offset = 0;
        this.buffered = 0;
        this.playing = false;
        this.ended = false;
        this.utterance = 0;
        this.report();
      }
    };
  }

  report() {
    this.port.postMessage({
      type: "status",
      bufferedMs: (this.buffered / sampleRate) * 1000,
      underruns: this.underruns,
      playedMs: (this.played / sampleRate) * 1000,
      utteranceMs: (this.utterance / sampleRate) * 1000,
      playing: this.playing,
    });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && (this.buffered >= this.startSamples || (this.ended && this.buffered > 0))) {
      this.playing = true;
    }
    let i = 0;
    if (this.playing) {
      while (i < out.length && this.chunks.length > 0) {
        const chunk = this.chunks[0];
        const n = Math.min(out.length - i, chunk.length - this.offset);
        out.set(chunk.subarray(this.offset, this.offset + n), i);
        i += n;
        this.offset += n;
        this.buffered -= n;
        this.played += n;
        this.utterance += n;
        if (this.offset === chunk.length) {
          this.chunks.shift();
          this.offset = 0;
        }
      }
      if (i < out.length) {
        if (!this.ended) {
          this.underruns += 1;
        }
        this.playing = false;
      }
    }
    out.fill(0, i);
    for (let c = 1; c < outputs[0].length; c++) {
      outputs[0][c].set(out);
    }
    this.quanta += 1;
    if (this.quanta % 8 === 0) {
      this.report();
    }
    return true;
  }
}

registerProcessor("stream-player", StreamPlayer);
