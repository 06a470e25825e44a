//! Streaming synthesis inside a clause: the text part runs once, then the
//! flow and the decoder run on windows of latent frames, so the first
//! samples exist after one small decoder call instead of after the whole
//! clause. With enough context the result equals the one-shot output (the
//! flow and decoder are convolutional with short receptive fields).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ort::session::Session;
use ort::value::Tensor;

pub(crate) use bound::{Bound, shared_turn};

use super::chunks::{ChunkPlan, Window};
use super::phonemes::Run;
use super::split::SplitModel;
use super::{EngineError, WordSpan};
use crate::gpu::Device;

mod bound;

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
    /// The widths windows are widened to ([`ChunkPlan::widths`] when the
    /// plan is uniform, else none).
    widths: Vec<usize>,
    /// With constant shapes: a session per input shape.
    shaped: Option<Shaped>,
    /// Decoder calls made.
    decoder_calls: u64,
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

    /// Latent frames the next window decodes.
    pub fn next_window_frames(&self) -> usize {
        self.windows.get(self.next).map_or(0, |w| w.end - w.start)
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

    /// Frames `lo..hi` of every channel, each followed by zeros up to
    /// `width`, as a `[1, C, width]` tensor.
    fn window(&self, lo: usize, hi: usize, width: usize) -> Result<Tensor<f32>, EngineError> {
        let mut out = vec![0.0; self.channels * width];
        self.write_window(lo, hi, width, &mut out)?;
        Tensor::from_array(([1usize, self.channels, width], out)).map_err(err)
    }

    /// Writes frames `lo..hi` into `out`, `[channels, width]`, each
    /// channel's row padded with zeros.
    fn write_window(
        &self,
        lo: usize,
        hi: usize,
        width: usize,
        out: &mut [f32],
    ) -> Result<(), EngineError> {
        if out.len() != self.channels * width || hi - lo > width {
            return Err(err(format!(
                "{} values cannot hold {} channels of {width} frames",
                out.len(),
                self.channels
            )));
        }
        for (c, row) in out.chunks_exact_mut(width).enumerate() {
            row[..hi - lo].copy_from_slice(&self.data[c * self.len + lo..c * self.len + hi]);
            row[hi - lo..].fill(0.0);
        }
        Ok(())
    }
}

/// What a session will see, which decides how it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sees {
    /// The text part's ids unpadded: sizes follow the text, so no memory
    /// is kept between runs, which would follow the longest text ever
    /// seen.
    TextOfAnySize,
    /// The text part's ids padded to one bucket.
    TextBucket,
    /// Flow blocks or decoder windows of any shape.
    AnyShape,
    /// One shape, at fixed addresses ([`Bound`]): with a CUDA graph when
    /// the voice asks for graphs on a GPU.
    OneShape,
}

/// Configures a session builder (threads, spinning, device) for what the
/// session will see and loads a part's bytes.
pub(crate) type MakeSession =
    Arc<dyn Fn(&[u8], Sees) -> Result<Session, EngineError> + Send + Sync>;

/// Where the sessions run, and whether a session that sees one shape
/// replays a CUDA graph.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub device: Device,
    pub graphs: bool,
    /// The text part runs on the CPU whatever the device.
    pub text_on_cpu: bool,
}

impl Placement {
    /// The same place, without CUDA graphs: for sessions that other
    /// threads run (a graph is the capturing thread's) or that are made
    /// while serving (a capture stops every other thread's device work).
    pub(crate) fn without_graphs(self) -> Self {
        Self {
            graphs: false,
            ..self
        }
    }
}

/// Phoneme-id counts the text part's runs are padded to with constant
/// shapes (powers of two up to the longest run,
/// [`MAX_IDS`](super::phonemes::MAX_IDS)); the padding lies beyond
/// `input_lengths`, so the model masks it out.
const ID_BUCKETS: &[usize] = &[32, 64, 128, 256, 512, 1024];

/// Widths (context included) the flow's blocks are padded to with constant
/// shapes: the first block (≈ 50 frames by default), the usual block
/// ([`FLOW_BLOCK`] and its context, 192), and a clause's tail. A wider
/// block (a clause with a long first window) runs on the shared session.
const FLOW_BUCKETS: &[usize] = &[64, 128, 192, 256, 384, 512];

/// The smallest bucket that holds `n`, if one does.
fn bucket(buckets: &[usize], n: usize) -> Option<usize> {
    buckets.iter().copied().find(|&b| b >= n)
}

/// Sessions that each see one input shape ([`ChunkPlan::constant_shapes`]),
/// with the calls each ran: a decoder session per standard width and
/// padded batch, a text-part session per id bucket, a flow session per
/// block bucket.
struct Shaped {
    parts: Arc<SplitModel>,
    make: MakeSession,
    placement: Placement,
    /// Channels of the latent frames.
    channels: usize,
    /// Batches are padded to a power of two up to this.
    max_batch: usize,
    /// By `(width, rows)`.
    decoders: HashMap<(usize, usize), (Bound, u64)>,
    /// By padded id count (their output's length follows the text, so
    /// they are not bound).
    texts: HashMap<usize, (Session, u64)>,
    /// By padded width.
    flows: HashMap<usize, (Bound, u64)>,
}

impl Shaped {
    /// A session for every shape a call pads to, made now: none is made
    /// inside a call (which the call model would count as the call's
    /// cost).
    fn open(
        parts: &Arc<SplitModel>,
        make: &MakeSession,
        plan: ChunkPlan,
        placement: Placement,
        channels: usize,
    ) -> Result<Self, EngineError> {
        let mut shaped = Self {
            parts: Arc::clone(parts),
            make: Arc::clone(make),
            placement,
            channels,
            max_batch: plan.constant_shapes,
            decoders: HashMap::new(),
            texts: HashMap::new(),
            flows: HashMap::new(),
        };
        let rows: Vec<usize> = std::iter::successors(Some(1usize), |&r| Some(r * 2))
            .take_while(|&r| r <= plan.constant_shapes.next_power_of_two())
            .collect();
        for width in plan.widths() {
            for &r in &rows {
                let bound = bound(
                    make,
                    placement,
                    &parts.decoder,
                    &decoder_input(parts, channels, r, width),
                )?;
                shaped.decoders.insert((width, r), (bound, 0));
            }
        }
        for &n in ID_BUCKETS {
            shaped
                .texts
                .insert(n, (make(&parts.text, Sees::TextBucket)?, 0));
        }
        for &w in FLOW_BUCKETS {
            let bound = bound(
                make,
                placement,
                &parts.flow,
                &flow_inputs(parts, channels, w),
            )?;
            shaped.flows.insert(w, (bound, 0));
        }
        Ok(shaped)
    }

    /// Rows a call of `n` windows runs with: the next power of two, or `n`
    /// beyond `max_batch`.
    fn rows(&self, n: usize) -> usize {
        let rows = n.next_power_of_two();
        if rows <= self.max_batch.next_power_of_two() {
            rows
        } else {
            n
        }
    }

    /// The decoder session for one shape (made the first time it comes,
    /// if it was not made at the start).
    fn decoder(&mut self, width: usize, rows: usize) -> Result<&mut Bound, EngineError> {
        // Made while serving: a capture now would stall every thread.
        let placement = self.placement.without_graphs();
        let (make, parts) = (&self.make, &self.parts);
        let shapes = decoder_input(parts, self.channels, rows, width);
        counted(&mut self.decoders, (width, rows), || {
            bound(make, placement, &parts.decoder, &shapes)
        })
    }

    /// The bucket `n` phoneme ids are padded to, and its text-part
    /// session; `None` past the largest bucket.
    fn text(&mut self, n: usize) -> Result<Option<(usize, &mut Session)>, EngineError> {
        let Some(b) = bucket(ID_BUCKETS, n) else {
            return Ok(None);
        };
        let session = counted(&mut self.texts, b, || {
            (self.make)(&self.parts.text, Sees::TextBucket)
        })?;
        Ok(Some((b, session)))
    }

    /// The width a flow block of `width` frames is padded to, and its
    /// session; `None` past the largest bucket.
    fn flow(&mut self, width: usize) -> Result<Option<(usize, &mut Bound)>, EngineError> {
        let Some(w) = bucket(FLOW_BUCKETS, width) else {
            return Ok(None);
        };
        let placement = self.placement.without_graphs();
        let (make, parts) = (&self.make, &self.parts);
        let shapes = flow_inputs(parts, self.channels, w);
        let session = counted(&mut self.flows, w, || {
            bound(make, placement, &parts.flow, &shapes)
        })?;
        Ok(Some((w, session)))
    }
}

/// The decoder's input for `rows` windows of `width` frames of
/// `channels`.
fn decoder_input(
    parts: &SplitModel,
    channels: usize,
    rows: usize,
    width: usize,
) -> [(&str, [usize; 3]); 1] {
    [(parts.d.as_str(), [rows, channels, width])]
}

/// The flow's inputs for a block of `width` frames of `channels`.
fn flow_inputs(parts: &SplitModel, channels: usize, width: usize) -> [(&str, [usize; 3]); 2] {
    [
        (parts.z.as_str(), [1, channels, width]),
        (parts.mask.as_str(), [1, 1, width]),
    ]
}

/// A session of `part` bound to inputs of `shapes`: with a CUDA graph
/// when the placement asks, or without one, with a warning, when the
/// provider cannot capture this part (a node it leaves to the CPU, say).
fn bound(
    make: &MakeSession,
    placement: Placement,
    part: &[u8],
    shapes: &[(&str, [usize; 3])],
) -> Result<Bound, EngineError> {
    let Placement { device, graphs, .. } = placement;
    if graphs {
        match make(part, Sees::OneShape).and_then(|s| Bound::open(s, device, shapes, true)) {
            Ok(bound) => return Ok(bound),
            Err(e) => tracing::warn!(
                error = %e, ?shapes,
                "no CUDA graph for this shape; it runs without one"
            ),
        }
    }
    Bound::open(make(part, Sees::AnyShape)?, device, shapes, false)
}

/// The session under `key`, made by `make` if there is none, with its call
/// counted.
fn counted<K: std::hash::Hash + Eq, S>(
    sessions: &mut HashMap<K, (S, u64)>,
    key: K,
    make: impl FnOnce() -> Result<S, EngineError>,
) -> Result<&mut S, EngineError> {
    use std::collections::hash_map::Entry;
    let (session, calls) = match sessions.entry(key) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert((make()?, 0)),
    };
    *calls += 1;
    Ok(session)
}

/// The input shapes whose sessions ran calls, each list sorted.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    /// Decoder `(width, rows)`.
    pub decoder: Vec<(usize, usize)>,
    /// Padded phoneme-id counts.
    pub ids: Vec<usize>,
    /// Padded flow block widths.
    pub flow: Vec<usize>,
}

/// The shapes whose sessions ran calls, sorted.
#[cfg(test)]
fn used<K: Copy + Ord, S>(sessions: &HashMap<K, (S, u64)>) -> Vec<K> {
    let mut shapes: Vec<K> = sessions
        .iter()
        .filter(|(_, (_, calls))| *calls > 0)
        .map(|(&shape, _)| shape)
        .collect();
    shapes.sort_unstable();
    shapes
}

/// Channels of the text part's latent frames, from one run on a few
/// placeholder ids (the split parts do not declare their shapes).
fn latent_channels(text: &mut Session, z: &str) -> Result<usize, EngineError> {
    let ids = vec![0i64; 8];
    let outputs = text
        .run(ort::inputs![
            "input" => Tensor::from_array(([1usize, ids.len()], ids)).map_err(err)?,
            "input_lengths" => Tensor::from_array(([1usize], vec![8i64])).map_err(err)?,
            "scales" => Tensor::from_array(([3usize], vec![0.0f32, 1.0, 0.0])).map_err(err)?,
        ])
        .map_err(err)?;
    let shape = outputs[z].shape();
    match shape.get(1) {
        Some(&c) if c > 0 && shape.len() == 3 => Ok(c as usize),
        _ => Err(err(format!("the text part's {z} has shape {shape:?}"))),
    }
}

impl StreamedSessions {
    /// Opens the three parts with `make`.
    pub(crate) fn open(
        parts: &Arc<SplitModel>,
        plan: ChunkPlan,
        make: MakeSession,
        placement: Placement,
    ) -> Result<Self, EngineError> {
        // Opening allocates on the device: alone when it captures graphs,
        // else beside other work (see `bound`).
        let _exclusive = placement.graphs.then(bound::exclusive_turn);
        let _shared = (!placement.graphs).then(shared_turn);
        let mut text = make(&parts.text, Sees::TextOfAnySize)?;
        let shaped = if plan.constant_shapes > 0 {
            let channels = latent_channels(&mut text, &parts.z)?;
            Some(Shaped::open(parts, &make, plan, placement, channels)?)
        } else {
            None
        };
        Ok(Self {
            text,
            flow: make(&parts.flow, Sees::AnyShape)?,
            decoder: make(&parts.decoder, Sees::AnyShape)?,
            shaped,
            z: parts.z.clone(),
            mask: parts.mask.clone(),
            d: parts.d.clone(),
            durations: parts.durations.clone(),
            plan,
            widths: if plan.uniform {
                plan.widths()
            } else {
                Vec::new()
            },
            decoder_calls: 0,
        })
    }

    /// Decoder calls made so far.
    #[cfg(test)]
    pub(crate) fn decoder_calls(&self) -> u64 {
        self.decoder_calls
    }

    /// The shapes whose sessions ran calls; empty without constant
    /// shapes.
    #[cfg(test)]
    pub(crate) fn shapes(&self) -> Shapes {
        self.shaped.as_ref().map_or(Shapes::default(), |s| Shapes {
            decoder: used(&s.decoders),
            ids: used(&s.texts),
            flow: used(&s.flows),
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
        let _turn = shared_turn();
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

    /// Decodes the next window of several clauses (running the flow block
    /// each needs first, and the next run's text part when a run is done),
    /// in as few decoder calls as their windows allow (see [`Batch`]), and
    /// hands each one's samples to
    /// `emit` with its index. Returns, for each, whether windows remain;
    /// one clause's failure is its own, a decoder call's is its batch's.
    pub(crate) fn step_many(
        &mut self,
        ps: &mut [&mut StreamProgress],
        emit: &mut dyn FnMut(usize, &[f32]),
    ) -> Vec<Result<bool, EngineError>> {
        let _turn = shared_turn();
        let mut results: Vec<Result<bool, EngineError>> = Vec::with_capacity(ps.len());
        let mut due = Vec::with_capacity(ps.len());
        for (i, p) in ps.iter_mut().enumerate() {
            match self.prepare(p) {
                Ok(Some(w)) => {
                    due.push((i, w));
                    results.push(Ok(true));
                }
                Ok(None) => results.push(Ok(false)),
                Err(e) => results.push(Err(e)),
            }
        }
        let clause = |i: usize| (ps[i].z.len, ps[i].ready);
        for batch in Batch::group(&due, clause, self.plan.context, &self.widths) {
            crate::metrics::decoder_batch(batch.members.len());
            let input: Vec<(&Frames, Padded)> = batch
                .members
                .iter()
                .map(|&(i, padded)| (&ps[i].d, padded))
                .collect();
            match self.decode_batch(&input, batch.width) {
                Ok((audio, hop)) => {
                    for (k, &(i, padded)) in batch.members.iter().enumerate() {
                        let p = &mut *ps[i];
                        let w = p.windows[p.next];
                        let own = &audio[k * batch.width * hop..(k + 1) * batch.width * hop];
                        let kept = padded.kept(w);
                        p.hop = hop;
                        p.next += 1;
                        emit(i, &own[kept.start * hop..kept.end * hop]);
                        results[i] = Ok(p.next < p.windows.len() || !p.runs.is_empty());
                    }
                }
                Err(e) => {
                    for &(i, _) in &batch.members {
                        results[i] = Err(EngineError::Runtime(e.to_string()));
                    }
                }
            }
        }
        results
    }

    /// Readies a clause's next window: the next run's text part when a run
    /// is done, and the flow block the window needs. `None`: none is left.
    fn prepare(&mut self, p: &mut StreamProgress) -> Result<Option<Window>, EngineError> {
        if p.next >= p.windows.len()
            && let Some(run) = p.runs.pop_front()
        {
            self.start_run(p, run)?;
        }
        let Some(&w) = p.windows.get(p.next) else {
            return Ok(None);
        };
        if p.ready < w.hi {
            let upto = flow_block_end(p.ready, w.hi, p.z.len);
            self.flow_part(&p.z, &p.mask, &mut p.d, p.ready, upto)?;
            p.ready = upto;
        }
        Ok(Some(w))
    }

    /// The text part's latent frames and mask, and with `timed` (when the
    /// model has them) the frames of each phoneme id.
    fn text_part(
        &mut self,
        mut ids: Vec<i64>,
        scales: [f32; 3],
        timed: bool,
    ) -> Result<(Frames, Frames, Option<Vec<f32>>), EngineError> {
        let n = ids.len();
        // With constant shapes the ids are padded to their bucket: the
        // model masks everything past `input_lengths`.
        let (padded, text) = match self.shaped.as_mut().map(|s| s.text(n)).transpose()? {
            Some(Some(bucketed)) => bucketed,
            _ => (n, &mut self.text),
        };
        ids.resize(padded, 0);
        let outputs = text
            .run(ort::inputs![
                "input" => Tensor::from_array(([1usize, ids.len()], ids)).map_err(err)?,
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
                Some(d[..n.min(d.len())].to_vec())
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
        // With constant shapes the block is padded to its bucket with
        // masked-out zeros, which the flow's masked convolutions see as
        // they see the edge of an unpadded block.
        let outputs;
        let (width, shape, out) = match self.shaped.as_mut().map(|s| s.flow(hi - lo)).transpose()? {
            Some(Some((width, flow))) => {
                let zn = self.z.as_str();
                let (shape, out) = flow.run(&mut |name, values| {
                    let frames = if name == zn { z } else { mask };
                    frames.write_window(lo, hi, width, values)
                })?;
                (width, shape, out)
            }
            _ => {
                let width = hi - lo;
                outputs = self
                    .flow
                    .run(ort::inputs![
                        self.z.as_str() => z.window(lo, hi, width)?,
                        self.mask.as_str() => mask.window(lo, hi, width)?,
                    ])
                    .map_err(err)?;
                let (shape, out) = outputs[self.d.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(err)?;
                (width, shape.to_vec(), out)
            }
        };
        if shape.iter().product::<i64>() as usize != d.channels * width {
            return Err(err(format!("flow produced {shape:?} for {width} frames")));
        }
        for c in 0..d.channels {
            let src = &out[c * width + (from - lo)..c * width + (to - lo)];
            d.data[c * d.len + from..c * d.len + to].copy_from_slice(src);
        }
        Ok(())
    }

    /// Runs the decoder once on every member, each widened to `width`
    /// frames (with constant shapes and a standard width, on the session
    /// of its shape, the batch padded with zero windows whose output is
    /// dropped); returns
    /// the samples (`width × hop` per member, in order) and the hop.
    fn decode_batch(
        &mut self,
        members: &[(&Frames, Padded)],
        width: usize,
    ) -> Result<(Vec<f32>, usize), EngineError> {
        let channels = members.first().map_or(0, |(d, _)| d.channels);
        let n = members.len();
        // A window that could not be widened to a standard width (at a
        // clause's edge) runs on the shared session: its shapes are many.
        let standard = self.widths.contains(&width);
        let shaped = self.shaped.as_mut().filter(|_| standard);
        let rows = shaped.as_ref().map_or(n, |s| s.rows(n));
        let mut input = Vec::with_capacity(rows * channels * width);
        for (d, padded) in members {
            padded.write(d, &mut input);
        }
        input.resize(rows * channels * width, 0.0);
        self.decoder_calls += 1;
        let outputs;
        let audio = match shaped {
            Some(shaped) => {
                let decoder = shaped.decoder(width, rows)?;
                let fill = &mut |_: &str, values: &mut [f32]| {
                    if values.len() != input.len() {
                        return Err(err(format!(
                            "the decoder takes {} values, not {}",
                            values.len(),
                            input.len()
                        )));
                    }
                    values.copy_from_slice(&input);
                    Ok(())
                };
                decoder.run(fill)?.1
            }
            None => {
                let tensor = Tensor::from_array(([rows, channels, width], input)).map_err(err)?;
                outputs = self
                    .decoder
                    .run(ort::inputs![self.d.as_str() => tensor])
                    .map_err(err)?;
                outputs[0].try_extract_tensor::<f32>().map_err(err)?.1
            }
        };
        let frames = rows * width;
        if frames == 0 || audio.len() % frames != 0 {
            return Err(err(format!(
                "decoder produced {} samples for {rows} × {width} frames",
                audio.len(),
            )));
        }
        let hop = audio.len() / frames;
        Ok((audio[..n * width * hop].to_vec(), hop))
    }
}

/// A window widened to a batch's common width: real latent frames
/// `lo..hi` (the window's own, and more of the clause's on either side
/// where the flow has computed them), then zero frames on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Padded {
    lo: usize,
    hi: usize,
    zeros_left: usize,
    zeros_right: usize,
}

impl Padded {
    /// Widens window `w` of a clause of `len` latent frames, `ready` of
    /// them computed by the flow, to `width` frames without changing the
    /// frames it keeps: first with real frames around it, then with zeros
    /// on a side where at least `context` real frames separate the kept
    /// frames from the zeros (beyond the decoder's receptive field). A
    /// window at a clause's edge has no such side there: zeros would
    /// change its edge samples. `None` when it cannot be done.
    fn widen(w: Window, len: usize, ready: usize, context: usize, width: usize) -> Option<Self> {
        let mut need = width.checked_sub(w.hi - w.lo)?;
        let left = need.min(w.lo);
        need -= left;
        let right = need.min(ready.min(len).saturating_sub(w.hi));
        need -= right;
        let (lo, hi) = (w.lo - left, w.hi + right);
        let mut padded = Self {
            lo,
            hi,
            zeros_left: 0,
            zeros_right: 0,
        };
        if need == 0 {
            return Some(padded);
        }
        if context == 0 {
            return None;
        }
        if hi - w.end >= context {
            padded.zeros_right = need;
        } else if w.start - lo >= context {
            padded.zeros_left = need;
        } else {
            return None;
        }
        Some(padded)
    }

    /// The frames of the widened window that belong to `w`'s output.
    fn kept(&self, w: Window) -> std::ops::Range<usize> {
        let at = self.zeros_left + (w.start - self.lo);
        at..at + (w.end - w.start)
    }

    /// Appends the widened window of `d`, channel by channel.
    fn write(&self, d: &Frames, out: &mut Vec<f32>) {
        for c in 0..d.channels {
            out.extend(std::iter::repeat_n(0.0, self.zeros_left));
            out.extend_from_slice(&d.data[c * d.len + self.lo..c * d.len + self.hi]);
            out.extend(std::iter::repeat_n(0.0, self.zeros_right));
        }
    }
}

/// Windows of several clauses that run as one decoder call.
#[derive(Debug, PartialEq)]
struct Batch {
    /// The common width, in latent frames.
    width: usize,
    /// Each member's index and how its window is widened.
    members: Vec<(usize, Padded)>,
}

impl Batch {
    /// Groups windows (`(index, window)`; `clause(index)` gives the clause's
    /// length and frames ready) into decoder calls. The widest window left
    /// sets a call's width: its own, or the smallest of `widths` that holds
    /// it when it can be widened to that. Every other window at least half
    /// as wide that can be widened to the call's width without changing its
    /// output joins it (so that padding never costs more than the call's
    /// real work).
    fn group(
        due: &[(usize, Window)],
        clause: impl Fn(usize) -> (usize, usize),
        context: usize,
        widths: &[usize],
    ) -> Vec<Batch> {
        let widen = |i: usize, w: Window, width: usize| {
            let (len, ready) = clause(i);
            Padded::widen(w, len, ready, context, width)
        };
        let mut left: Vec<(usize, Window)> = due.to_vec();
        // Widest first; ties in the callers' order.
        left.sort_by_key(|&(i, w)| (std::cmp::Reverse(w.hi - w.lo), i));
        let mut batches = Vec::new();
        while let Some(&(first, widest)) = left.first() {
            let own = widest.hi - widest.lo;
            let width = widths
                .iter()
                .copied()
                .find(|&b| b >= own)
                .filter(|&b| widen(first, widest, b).is_some())
                .unwrap_or(own);
            let mut members = Vec::new();
            left.retain(|&(i, w)| {
                let wide_enough = (w.hi - w.lo) * 2 >= width || i == first;
                match widen(i, w, width).filter(|_| wide_enough) {
                    Some(padded) => {
                        members.push((i, padded));
                        false
                    }
                    None => true,
                }
            });
            members.sort_by_key(|&(i, _)| i);
            batches.push(Batch { width, members });
        }
        batches
    }
}

#[cfg(test)]
mod tests;
