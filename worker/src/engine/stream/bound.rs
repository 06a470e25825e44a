//! A session that sees one input shape, run through an IO binding: its
//! inputs and its output are allocated once, on the session's device, and
//! stay at the same addresses call after call. Each call writes its frames
//! into the inputs (on a GPU through a host copy) and reads the output
//! back. Fixed addresses are what a CUDA graph needs to be replayed: with
//! `--cuda-graphs` the session is built with one, captured at start.
//!
//! ONNX Runtime captures a graph in CUDA's global mode, where another
//! thread's device work (a run, an allocation, a copy) spoils the capture
//! or fails, and keeps the graph per thread. So device work takes turns
//! on [`GPU`]: opening sessions that capture holds it exclusively, any
//! other opening, step or run holds it shared. The turns are taken where
//! work enters the engine ([`StreamedSessions`](super::StreamedSessions)'
//! `open`, `begin` and `step_many`, and the one-shot synthesiser), never
//! in here; and a graphed session runs only on the thread that opened it.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::err;
use crate::engine::EngineError;
use crate::gpu::Device;

/// Held shared by every run of a streaming voice's sessions, exclusively
/// by a CUDA graph's capture.
static GPU: RwLock<()> = RwLock::new(());

/// A turn on the device beside other work (never during a capture).
pub(crate) fn shared_turn() -> RwLockReadGuard<'static, ()> {
    GPU.read().unwrap_or_else(|p| p.into_inner())
}

/// The device alone: for opening sessions that capture CUDA graphs.
pub(crate) fn exclusive_turn() -> RwLockWriteGuard<'static, ()> {
    GPU.write().unwrap_or_else(|p| p.into_inner())
}

/// Runs before a CUDA graph is captured: ONNX Runtime captures on the
/// run after its first regular ones, so the start-up runs include it.
const RUNS_TO_CAPTURE: usize = 3;

/// A tensor on the device, and its host copy when the device is not the
/// host.
struct Slot {
    name: String,
    device: Tensor<f32>,
    host: Option<Tensor<f32>>,
}

impl Slot {
    fn new(name: &str, shape: &[usize], place: &Place) -> Result<Self, EngineError> {
        let shape = shape.to_vec();
        let device = Tensor::<f32>::new(&place.allocator, shape.clone()).map_err(err)?;
        let host = match place.device {
            Device::Cpu => None,
            _ => Some(Tensor::<f32>::new(&Allocator::default(), shape).map_err(err)?),
        };
        Ok(Self {
            name: name.to_owned(),
            device,
            host,
        })
    }

    /// The name, and the memory a call writes its input into (the host
    /// copy, if any).
    fn writable(&mut self) -> (&str, &mut [f32]) {
        let values = self.host.as_mut().unwrap_or(&mut self.device);
        (&self.name, values.extract_tensor_mut().1)
    }

    /// Copies the host copy to the device.
    fn upload(&mut self) -> Result<(), EngineError> {
        match &self.host {
            Some(host) => host.copy_into(&mut self.device).map_err(err),
            None => Ok(()),
        }
    }

    /// Copies the device's values to the host copy; returns them.
    fn download(&mut self) -> Result<&[f32], EngineError> {
        if let Some(host) = &mut self.host {
            self.device.copy_into(&mut *host).map_err(err)?;
        }
        Ok(self
            .host
            .as_ref()
            .unwrap_or(&self.device)
            .extract_tensor()
            .1)
    }
}

/// Writes one input's values, given its name.
pub(crate) type Fill<'a> = dyn FnMut(&str, &mut [f32]) -> Result<(), EngineError> + 'a;

/// Where a bound session's tensors live.
struct Place {
    device: Device,
    allocator: Allocator,
}

/// A session bound to fixed inputs and, from its first run on, a fixed
/// output.
pub(crate) struct Bound {
    // Dropped in this order: the binding and the tensors before the
    // allocator, the allocator before the session it came from.
    binding: IoBinding,
    inputs: Vec<Slot>,
    output: Option<Slot>,
    place: Place,
    session: Session,
}

impl Bound {
    /// Binds `session`'s inputs, each `(name, shape)`, on `device`. With
    /// `graphed` (a session built with a CUDA graph; the caller holds
    /// [`exclusive_turn`]) it runs now until the graph is captured;
    /// otherwise its first call learns the output's shape.
    pub(crate) fn open(
        session: Session,
        device: Device,
        shapes: &[(&str, [usize; 3])],
        graphed: bool,
    ) -> Result<Self, EngineError> {
        let allocator = match device {
            Device::Cpu => Allocator::default(),
            Device::Cuda(n) => Allocator::new(
                &session,
                MemoryInfo::new(
                    AllocationDevice::CUDA,
                    n as i32,
                    AllocatorType::Device,
                    MemoryType::Default,
                )
                .map_err(err)?,
            )
            .map_err(err)?,
        };
        let place = Place { device, allocator };
        let inputs = shapes
            .iter()
            .map(|(name, shape)| Slot::new(name, shape, &place))
            .collect::<Result<Vec<_>, _>>()?;
        let mut bound = Self {
            // Each call binds the inputs; the first one, the output.
            binding: session.create_binding().map_err(err)?,
            inputs,
            output: None,
            place,
            session,
        };
        if graphed {
            for _ in 0..RUNS_TO_CAPTURE {
                bound.run(&mut |_, values| {
                    values.fill(0.0);
                    Ok(())
                })?;
            }
        }
        Ok(bound)
    }

    /// Runs one call: `fill(name, values)` writes each input (every value
    /// of it, in the order of its shape, or fails the call);
    /// returns the output's
    /// shape and values.
    pub(crate) fn run(&mut self, fill: &mut Fill<'_>) -> Result<(Vec<i64>, &[f32]), EngineError> {
        for slot in &mut self.inputs {
            let (name, values) = slot.writable();
            fill(name, values)?;
            slot.upload()?;
            // Bound on every call (same address): a provider that copies
            // an input when it is bound (to another device than the
            // tensor's) copies the new values.
            self.binding
                .bind_input(&slot.name, &slot.device)
                .map_err(err)?;
        }
        if self.output.is_none() {
            self.bind_output()?;
        }
        self.session.run_binding(&self.binding).map_err(err)?;
        let output = self
            .output
            .as_mut()
            .ok_or_else(|| err("the output is not bound"))?;
        let shape = output.device.shape().to_vec();
        Ok((shape, output.download()?))
    }

    /// Learns the output's shape from a run with the output on the device
    /// wherever the session puts it, then binds a tensor of that shape.
    fn bind_output(&mut self) -> Result<(), EngineError> {
        let name = self
            .session
            .outputs()
            .first()
            .map(|o| o.name().to_owned())
            .ok_or_else(|| err("the part has no output"))?;
        let memory = self.place.allocator.memory_info().to_owned();
        self.binding
            .bind_output_to_device(&name, &memory)
            .map_err(err)?;
        let shape: Vec<usize> = {
            let outputs = self.session.run_binding(&self.binding).map_err(err)?;
            let shape = outputs[0].shape();
            shape.iter().map(|&d| d as usize).collect()
        };
        self.binding.clear_outputs();
        let mut slot = Slot::new(&name, &shape, &self.place)?;
        self.binding
            .bind_output(&name, &mut slot.device)
            .map_err(err)?;
        self.output = Some(slot);
        Ok(())
    }

    /// The address of each input and of the output (once bound), which a
    /// replayed graph reads and writes.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .chain(&self.output)
            .map(|s| s.device.data_ptr() as usize)
            .collect()
    }
}
