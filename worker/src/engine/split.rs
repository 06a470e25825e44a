//! Splits a Piper (VITS) ONNX graph into its three parts, found from the
//! graph's structure rather than from tensor names:
//!
//! - **decoder**: the HiFi-GAN generator. Its input `D` is the earliest
//!   tensor on the path into the first `ConvTranspose` that alone separates
//!   the graph's output from its inputs (every path from the inputs to the
//!   output passes through it).
//! - **flow**: `D` is produced by `z · mask`; the flow's inputs are the mask
//!   and the earliest tensor `Z` such that `{Z, mask}` separates `z` from the
//!   graph's inputs. No random node may lie between them.
//! - **text**: everything from the graph's inputs to `{Z, mask}` (text
//!   encoder, duration predictor, length regulator and both noise nodes).
//!   It also outputs the phoneme durations when the graph has them (see
//!   [`durations`]): what word timestamps are computed from.
//!
//! Each part is a standalone model: the nodes reachable backwards from its
//! outputs up to its inputs, in the original (topological) order, with the
//! initializers they use.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::{
    GraphProto, Message, ModelProto, NodeProto, TypeProto, ValueInfoProto, type_proto,
};

/// Why a graph cannot be split; the voice then synthesises one-shot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The bytes are not an ONNX model.
    #[error("not an ONNX model: {0}")]
    Parse(String),
    /// The graph lacks the structure streaming needs.
    #[error("graph does not have the expected VITS structure: {0}")]
    Structure(String),
}

/// The three parts, serialised, and the names of the tensors between them.
#[derive(Debug, Clone)]
pub struct SplitModel {
    /// Graph inputs → `[z, mask]`.
    pub text: Vec<u8>,
    /// `[z, mask]` → `d`.
    pub flow: Vec<u8>,
    /// `d` → audio.
    pub decoder: Vec<u8>,
    /// The flow's first input (latent frames, `[1, C, T]`).
    pub z: String,
    /// The mask (`[1, 1, T]`).
    pub mask: String,
    /// The decoder's input (`[1, C, T]`).
    pub d: String,
    /// The text part's third output, latent frames per phoneme id
    /// (`[1, 1, N]`), when the graph has it.
    pub durations: Option<String>,
}

/// Operators the decoder may contain: pointwise or convolutional, so that
/// it can run on a window of frames.
pub(crate) const DECODER_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "LeakyRelu",
    "Relu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Tanh",
    "Unsqueeze",
    "Squeeze",
    "Identity",
    "Constant",
];
/// Operators that draw random numbers: they must stay in the text part.
const RANDOM_OPS: &[&str] = &[
    "RandomNormalLike",
    "RandomNormal",
    "RandomUniformLike",
    "RandomUniform",
];

/// The graph's dataflow: which node produces and which nodes consume each tensor.
struct Dataflow<'a> {
    nodes: &'a [NodeProto],
    producer: HashMap<&'a str, usize>,
    sources: HashSet<&'a str>,
}

impl<'a> Dataflow<'a> {
    fn new(graph: &'a GraphProto) -> Self {
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let sources = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !initializers.contains(n))
            .collect();
        let mut producer = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for out in &node.output {
                producer.insert(out.as_str(), i);
            }
        }
        Self {
            nodes: &graph.node,
            producer,
            sources,
        }
    }

    /// Nodes needed to compute `outputs` when `stop` tensors are given,
    /// and whether the walk reached a graph input (or a random node, if
    /// `random_is_source`).
    fn ancestors(
        &self,
        outputs: &[&str],
        stop: &[&str],
        random_is_source: bool,
    ) -> (Vec<usize>, bool) {
        let mut seen = HashSet::new();
        let mut reached_source = false;
        let mut stack: Vec<&str> = outputs.to_vec();
        let mut visited_tensors = HashSet::new();
        while let Some(t) = stack.pop() {
            if stop.contains(&t) || !visited_tensors.insert(t) {
                continue;
            }
            if self.sources.contains(t) {
                reached_source = true;
                continue;
            }
            let Some(&n) = self.producer.get(t) else {
                continue;
            };
            if seen.insert(n) {
                let node = &self.nodes[n];
                if random_is_source && RANDOM_OPS.contains(&node.op_type.as_str()) {
                    reached_source = true;
                }
                stack.extend(
                    node.input
                        .iter()
                        .map(String::as_str)
                        .filter(|s| !s.is_empty()),
                );
            }
        }
        let mut order: Vec<usize> = seen.into_iter().collect();
        order.sort_unstable();
        (order, reached_source)
    }

    /// Nodes that depend on every random node of the graph (empty when
    /// there is none).
    fn downstream_of_random(&self) -> HashSet<usize> {
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for input in &node.input {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        let mut common: Option<HashSet<usize>> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !RANDOM_OPS.contains(&node.op_type.as_str()) {
                continue;
            }
            let mut reached = HashSet::from([i]);
            let mut stack = vec![i];
            while let Some(n) = stack.pop() {
                for out in &self.nodes[n].output {
                    for &c in consumers.get(out.as_str()).into_iter().flatten() {
                        if reached.insert(c) {
                            stack.push(c);
                        }
                    }
                }
            }
            common = Some(match common {
                None => reached,
                Some(c) => c.intersection(&reached).copied().collect(),
            });
        }
        common.unwrap_or_default()
    }

    /// Whether `stop` separates `output` from the graph's inputs.
    fn separates(&self, output: &str, stop: &[&str], random_is_source: bool) -> bool {
        !self.ancestors(&[output], stop, random_is_source).1
    }
}

/// Splits `model` (the bytes of an `.onnx` file).
pub fn split(model: &[u8]) -> Result<SplitModel, SplitError> {
    let model =
        ModelProto::parse_from_bytes(model).map_err(|e| SplitError::Parse(e.to_string()))?;
    let graph = model.graph.as_ref().ok_or_else(|| structure("no graph"))?;
    let output = graph
        .output
        .first()
        .map(|o| o.name.as_str())
        .ok_or_else(|| structure("no output"))?;
    let flow = Dataflow::new(graph);
    let d = decoder_input(graph, &flow, output)?;
    let (z, mask) = flow_input(graph, &flow, d)?;
    let durations = durations(graph);
    let mut text_outputs = vec![z, mask];
    text_outputs.extend(durations.as_deref());
    let bytes = |part: ModelProto| {
        part.write_to_bytes()
            .map_err(|e| SplitError::Parse(e.to_string()))
    };
    Ok(SplitModel {
        text: bytes(extract(&model, &[], &text_outputs)?)?,
        flow: bytes(extract(&model, &[z, mask], &[d])?)?,
        decoder: bytes(extract(&model, &[d], &[output])?)?,
        z: z.to_owned(),
        mask: mask.to_owned(),
        d: d.to_owned(),
        durations,
    })
}

fn structure(m: &str) -> SplitError {
    SplitError::Structure(m.to_owned())
}

/// The decoder's input: walk back from the first ConvTranspose along its
/// data input while each tensor still separates the output on its own.
/// Every node after it must be one that can run on a window.
fn decoder_input<'g>(
    graph: &'g GraphProto,
    flow: &Dataflow<'g>,
    output: &str,
) -> Result<&'g str, SplitError> {
    let first_up = graph
        .node
        .iter()
        .position(|n| n.op_type == "ConvTranspose")
        .ok_or_else(|| structure("no ConvTranspose (no HiFi-GAN decoder)"))?;
    let mut d: Option<&str> = None;
    let mut cursor = graph.node[first_up].input.first().map(String::as_str);
    while let Some(t) = cursor {
        if !flow.separates(output, &[t], false) {
            break;
        }
        d = Some(t);
        cursor = flow
            .producer
            .get(t)
            .and_then(|&n| graph.node[n].input.first())
            .map(String::as_str);
    }
    let d = d.ok_or_else(|| structure("no single tensor feeds the decoder"))?;
    let (decoder_nodes, _) = flow.ancestors(&[output], &[d], false);
    if let Some(n) = decoder_nodes
        .iter()
        .find(|&&n| !DECODER_OPS.contains(&graph.node[n].op_type.as_str()))
    {
        return Err(SplitError::Structure(format!(
            "decoder holds a {} node, which cannot run on a window",
            graph.node[*n].op_type
        )));
    }
    Ok(d)
}

/// The flow's input `z` and the mask, from `d = z · mask`: which operand
/// is the mask, and the earliest Z with {Z, mask} separating z from the
/// inputs and from every random node. Such a Z lies downstream of every
/// random node, so only those nodes are tried (all of z's ancestors when
/// there is none).
fn flow_input<'g>(
    graph: &'g GraphProto,
    flow: &Dataflow<'g>,
    d: &str,
) -> Result<(&'g str, &'g str), SplitError> {
    let mul = flow
        .producer
        .get(d)
        .map(|&n| &graph.node[n])
        .ok_or_else(|| structure("decoder input has no producer"))?;
    if mul.op_type != "Mul" || mul.input.len() != 2 {
        return Err(structure("decoder input is not z · mask"));
    }
    let (z_path, mask) = [(0, 1), (1, 0)]
        .into_iter()
        .map(|(a, b)| (mul.input[a].as_str(), mul.input[b].as_str()))
        .find(|(z, mask)| flow.producer.contains_key(z) && !flow.separates(z, &[mask], true))
        .ok_or_else(|| structure("cannot tell the flow output from the mask"))?;
    let (mut candidates, _) = flow.ancestors(&[z_path], &[mask], false);
    let noise = flow.downstream_of_random();
    if !noise.is_empty() {
        candidates.retain(|n| noise.contains(n));
    }
    let z = candidates
        .iter()
        .flat_map(|&n| &graph.node[n].output)
        .find(|t| flow.separates(z_path, &[t.as_str(), mask], true))
        .ok_or_else(|| structure("no flow input found"))?;
    Ok((z.as_str(), mask))
}

/// The length regulator's durations: the output of the graph's one `Ceil`
/// node whose result is summed (`ReduceSum` for the clause's length,
/// `CumSum` for each phoneme's position), i.e. `ceil(exp(logw) · mask ·
/// length_scale)`, latent frames per phoneme id. `None` when there is not
/// exactly one such node.
pub fn durations(graph: &GraphProto) -> Option<String> {
    let mut found = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Ceil")
        .filter(|n| {
            n.output.first().is_some_and(|out| {
                graph.node.iter().any(|m| {
                    matches!(m.op_type.as_str(), "CumSum" | "ReduceSum")
                        && m.input.first() == Some(out)
                })
            })
        });
    match (found.next(), found.next()) {
        (Some(n), None) => n.output.first().cloned(),
        _ => None,
    }
}

/// The whole model with its durations (see [`durations`]) as a second
/// output, for voices that synthesise whole clauses; `None` when the graph
/// has no such tensor.
pub fn with_durations(model: &[u8]) -> Result<Option<(Vec<u8>, String)>, SplitError> {
    let mut model =
        ModelProto::parse_from_bytes(model).map_err(|e| SplitError::Parse(e.to_string()))?;
    let Some(graph) = model.graph.as_mut() else {
        return Err(SplitError::Structure("no graph".into()));
    };
    let Some(name) = durations(graph) else {
        return Ok(None);
    };
    let info = value_info(graph, &Dataflow::new(graph), &name);
    graph.output.push(info);
    let bytes = model
        .write_to_bytes()
        .map_err(|e| SplitError::Parse(e.to_string()))?;
    Ok(Some((bytes, name)))
}

/// The sub-model computing `outputs` from `inputs` (the original graph
/// inputs when `inputs` is empty).
fn extract(
    model: &ModelProto,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<ModelProto, SplitError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| SplitError::Structure("no graph".into()))?;
    let flow = Dataflow::new(graph);
    let (nodes, _) = flow.ancestors(outputs, inputs, false);
    if nodes.iter().any(|&n| {
        graph.node[n]
            .attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return Err(SplitError::Structure("control flow with subgraphs".into()));
    }
    let used: HashSet<&str> = nodes
        .iter()
        .flat_map(|&n| graph.node[n].input.iter().map(String::as_str))
        .collect();
    let mut sub = GraphProto::new();
    sub.name = format!("{}_part", graph.name);
    sub.node = nodes.iter().map(|&n| graph.node[n].clone()).collect();
    sub.initializer = graph
        .initializer
        .iter()
        .filter(|t| used.contains(t.name.as_str()))
        .cloned()
        .collect();
    sub.input = if inputs.is_empty() {
        graph
            .input
            .iter()
            .filter(|i| used.contains(i.name.as_str()))
            .cloned()
            .collect()
    } else {
        inputs
            .iter()
            .map(|name| value_info(graph, &flow, name))
            .collect()
    };
    sub.output = outputs
        .iter()
        .map(|name| value_info(graph, &flow, name))
        .collect();
    let mut part = ModelProto::new();
    part.ir_version = model.ir_version;
    part.opset_import = model.opset_import.clone();
    part.producer_name = model.producer_name.clone();
    part.producer_version = model.producer_version.clone();
    part.domain = model.domain.clone();
    part.model_version = model.model_version;
    part.graph = protobuf::MessageField::some(sub);
    Ok(part)
}

/// Type information for a tensor: from the graph when it has it, else a
/// tensor of unknown shape whose element type comes from a producing
/// `Cast`, or float.
fn value_info(graph: &GraphProto, flow: &Dataflow<'_>, name: &str) -> ValueInfoProto {
    let known = graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
        .find(|v| v.name == name);
    if let Some(v) = known {
        return v.clone();
    }
    const FLOAT: i32 = 1;
    let elem_type = flow
        .producer
        .get(name)
        .map(|&n| &graph.node[n])
        .filter(|n| n.op_type == "Cast")
        .and_then(|n| n.attribute.iter().find(|a| a.name == "to"))
        .map_or(FLOAT, |a| a.i as i32);
    tensor_value(name, elem_type)
}

/// A tensor of `elem_type` and unknown shape named `name`.
pub(crate) fn tensor_value(name: &str, elem_type: i32) -> ValueInfoProto {
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = elem_type;
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut v = ValueInfoProto::new();
    v.name = name.to_owned();
    v.type_ = protobuf::MessageField::some(ty);
    v
}
