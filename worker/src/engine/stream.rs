//! Streaming synthesis inside a clause: the text part runs once, then the
//! flow and the decoder run on windows of latent frames, so the first
//! samples exist after one small decoder call instead of after the whole
//! clause. With enough context the result equals the one-shot output (the
//! flow and decoder are convolutional with short receptive fields).

use std::collections::VecDeque;

use ort::session::Session;
use ort::value::Tensor;

use super::chunks::{ChunkPlan, Window};
use super::piper::Run;
use super::split::SplitModel;
use super::{EngineError, WordSpan};

/// Frames of context the flow gets on each side (its receptive field is
/// ±32 latent frames for this architecture).
pub const FLOW_CONTEXT: usize = 32;
/// After the first, the flow runs in blocks of at least this many frames,
/// ahead of the decoder, to spend less on context.
const FLOW_BLOCK: usize = 128;

/// Where the flow block that starts at `ready` ends, when the decoder needs
/// frames up to `need`: just those for the first block (first audio waits
/// on it), then at least [`FLOW_BLOCK`] frames, and never leaving a tail
/// shorter than half a block for one more call (each call costs a few
/// milliseconds whatever its size).
fn flow_block_end(ready: usize, need: usize, len: usize) -> usize {
    let end = if ready == 0 {
        need
    } else {
        (ready + FLOW_BLOCK).max(need)
    };
    if len.saturating_sub(end) < FLOW_BLOCK / 2 && ready > 0 {
        len
    } else {
        end.min(len)
    }
}

/// One ONNX Runtime session per part, and the names joining them.
pub(crate) struct StreamedSessions {
    text: Session,
    flow: Session,
    decoder: Session,
    z: String,
    mask: String,
    d: String,
    durations: Option<String>,
    plan: ChunkPlan,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Runtime(e.to_string())
}

/// A clause between decoder windows: the text part's output, the flow's
/// output so far, and the windows still to decode. Plain data, so the next
/// window may run on any thread's sessions.
pub struct StreamProgress {
    z: Frames,
    mask: Frames,
    d: Frames,
    /// Frames of `d` the flow has computed.
    ready: usize,
    windows: Vec<Window>,
    /// The next window to decode.
    next: usize,
    /// Samples per latent frame (known after the first window; 0 before).
    hop: usize,
    /// Runs of phoneme ids whose text part has not run yet.
    runs: VecDeque<Run>,
    scales: [f32; 3],
    /// Latent frames of the clause's runs before the current one.
    before: usize,
    /// Words of the current run not yet handed out: text, first and end
    /// latent frame from the clause's start.
    words: Vec<(String, usize, usize)>,
}

impl StreamProgress {
    /// Latent frames not yet decoded.
    pub fn remaining_frames(&self) -> usize {
        self.windows
            .get(self.next)
            .map_or(0, |w| self.z.len - w.start)
    }

    /// Samples per latent frame, once a window has been decoded.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// The words whose place became known since the last call, in samples
    /// from the clause's start (once a window has been decoded).
    pub fn take_words(&mut self) -> Vec<WordSpan> {
        if self.hop == 0 {
            return Vec::new();
        }
        let hop = self.hop;
        self.words
            .drain(..)
            .map(|(text, start, end)| WordSpan {
                text,
                start: start * hop,
                end: end * hop,
            })
            .collect()
    }
}

/// A `[1, channels, frames]` tensor kept channel-major.
struct Frames {
    data: Vec<f32>,
    channels: usize,
    len: usize,
}

impl Frames {
    fn empty() -> Self {
        Self {
            data: Vec::new(),
            channels: 0,
            len: 0,
        }
    }

    fn from_output(shape: &[i64], data: &[f32]) -> Result<Self, EngineError> {
        match shape {
            [1, c, t] => Ok(Self {
                data: data.to_vec(),
                channels: *c as usize,
                len: *t as usize,
            }),
            other => Err(err(format!("expected a [1, C, T] tensor, got {other:?}"))),
        }
    }

    /// Frames `lo..hi` of every channel, as a `[1, C, hi − lo]` tensor.
    fn window(&self, lo: usize, hi: usize) -> Result<Tensor<f32>, EngineError> {
        let mut out = Vec::with_capacity(self.channels * (hi - lo));
        for c in 0..self.channels {
            out.extend_from_slice(&self.data[c * self.len + lo..c * self.len + hi]);
        }
        Tensor::from_array(([1usize, self.channels, hi - lo], out)).map_err(err)
    }
}

impl StreamedSessions {
    /// Opens the three parts with `make`, which configures a session
    /// builder (threads, spinning) and loads the bytes; its flag says
    /// whether the session's input size varies with the text (the text
    /// part), so that memory kept between runs would follow the longest
    /// text ever seen.
    pub(crate) fn open(
        parts: &SplitModel,
        plan: ChunkPlan,
        make: impl Fn(&[u8], bool) -> Result<Session, EngineError>,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            text: make(&parts.text, true)?,
            flow: make(&parts.flow, false)?,
            decoder: make(&parts.decoder, false)?,
            z: parts.z.clone(),
            mask: parts.mask.clone(),
            d: parts.d.clone(),
            durations: parts.durations.clone(),
            plan,
        })
    }

    /// Runs the text part on the first of a clause's runs of phoneme ids
    /// (one run unless the clause is very long): its latent frames are
    /// known from here on, and windows can be decoded one by one.
    pub(crate) fn begin(
        &mut self,
        runs: Vec<Run>,
        scales: [f32; 3],
    ) -> Result<StreamProgress, EngineError> {
        let mut runs = VecDeque::from(runs);
        let first = runs.pop_front().unwrap_or(Run {
            ids: Vec::new(),
            words: Vec::new(),
        });
        let mut progress = StreamProgress {
            z: Frames::empty(),
            mask: Frames::empty(),
            d: Frames::empty(),
            ready: 0,
            windows: Vec::new(),
            next: 0,
            hop: 0,
            runs,
            scales,
            before: 0,
            words: Vec::new(),
        };
        self.start_run(&mut progress, first)?;
        Ok(progress)
    }

    fn start_run(&mut self, p: &mut StreamProgress, mut run: Run) -> Result<(), EngineError> {
        let timed = !run.words.is_empty();
        let ids = std::mem::take(&mut run.ids);
        let (z, mask, durations) = self.text_part(ids, p.scales, timed)?;
        p.before += p.z.len;
        if let Some(durations) = durations {
            p.words.extend(run.word_frames(&durations, p.before));
        }
        let len = z.len;
        p.d = Frames {
            data: vec![0.0; z.channels * len],
            channels: z.channels,
            len,
        };
        p.z = z;
        p.mask = mask;
        p.ready = 0;
        p.windows = self.plan.windows(len);
        p.next = 0;
        Ok(())
    }

    /// Decodes the next window (running the flow block it needs first, and
    /// the next run's text part when a run is done) and hands its samples
    /// to `emit`. Returns whether windows remain.
    pub(crate) fn step(
        &mut self,
        p: &mut StreamProgress,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<bool, EngineError> {
        if p.next >= p.windows.len()
            && let Some(run) = p.runs.pop_front()
        {
            self.start_run(p, run)?;
        }
        let Some(&w) = p.windows.get(p.next) else {
            return Ok(false);
        };
        if p.ready < w.hi {
            let upto = flow_block_end(p.ready, w.hi, p.z.len);
            self.flow_part(&p.z, &p.mask, &mut p.d, p.ready, upto)?;
            p.ready = upto;
        }
        let audio = self.decode(&p.d, w.lo, w.hi)?;
        p.hop = audio.len() / (w.hi - w.lo);
        p.next += 1;
        emit(&audio[(w.start - w.lo) * p.hop..(w.end - w.lo) * p.hop]);
        Ok(p.next < p.windows.len() || !p.runs.is_empty())
    }

    /// The text part's latent frames and mask, and with `timed` (when the
    /// model has them) the frames of each phoneme id.
    fn text_part(
        &mut self,
        ids: Vec<i64>,
        scales: [f32; 3],
        timed: bool,
    ) -> Result<(Frames, Frames, Option<Vec<f32>>), EngineError> {
        let n = ids.len();
        let outputs = self
            .text
            .run(ort::inputs![
                "input" => Tensor::from_array(([1usize, n], ids)).map_err(err)?,
                "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?,
                "scales" => Tensor::from_array(([3usize], scales.to_vec())).map_err(err)?,
            ])
            .map_err(err)?;
        let (shape, z) = outputs[self.z.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        let z = Frames::from_output(shape, z)?;
        let (shape, mask) = outputs[self.mask.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        let mask = Frames::from_output(shape, mask)?;
        let durations = match &self.durations {
            Some(name) if timed => {
                let (_, d) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(err)?;
                Some(d.to_vec())
            }
            _ => None,
        };
        Ok((z, mask, durations))
    }

    /// Computes frames `from..to` of `d` with the flow, given context.
    fn flow_part(
        &mut self,
        z: &Frames,
        mask: &Frames,
        d: &mut Frames,
        from: usize,
        to: usize,
    ) -> Result<(), EngineError> {
        let lo = from.saturating_sub(FLOW_CONTEXT);
        let hi = (to + FLOW_CONTEXT).min(z.len);
        let outputs = self
            .flow
            .run(ort::inputs![
                self.z.as_str() => z.window(lo, hi)?,
                self.mask.as_str() => mask.window(lo, hi)?,
            ])
            .map_err(err)?;
        let (shape, out) = outputs[self.d.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        let width = hi - lo;
        if shape.iter().product::<i64>() as usize != d.channels * width {
            return Err(err(format!("flow produced {shape:?} for {width} frames")));
        }
        for c in 0..d.channels {
            let src = &out[c * width + (from - lo)..c * width + (to - lo)];
            d.data[c * d.len + from..c * d.len + to].copy_from_slice(src);
        }
        Ok(())
    }

    fn decode(&mut self, d: &Frames, lo: usize, hi: usize) -> Result<Vec<f32>, EngineError> {
        let outputs = self
            .decoder
            .run(ort::inputs![self.d.as_str() => d.window(lo, hi)?])
            .map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        if audio.len() % (hi - lo) != 0 {
            return Err(err(format!(
                "decoder produced {} samples for {} frames",
                audio.len(),
                hi - lo
            )));
        }
        Ok(audio.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_blocks_cover_the_clause_without_tiny_tails() {
        assert_eq!(
            flow_block_end(0, 18, 151),
            18,
            "the first block is only what the decoder needs"
        );
        assert_eq!(
            flow_block_end(18, 34, 151),
            151,
            "a 5-frame tail joins the second block"
        );
        assert_eq!(flow_block_end(18, 34, 600), 146);
        assert_eq!(flow_block_end(146, 200, 600), 274);
        assert_eq!(flow_block_end(530, 600, 600), 600);
        assert_eq!(flow_block_end(0, 10, 10), 10);
    }
}
