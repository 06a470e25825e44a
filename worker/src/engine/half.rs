//! An FP16 copy of a model part: its float weights stored as halves,
//! with a cast after each float input and before each float output, so
//! that callers still hand it and read from it 32-bit floats. On a GPU
//! the provider then computes in half precision; ONNX Runtime's CPU
//! provider casts back to FP32 around operators it has no FP16 kernel
//! for, which keeps only the rounding of weights and activations.

use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, TensorProto,
    attribute_proto::AttributeType, tensor_proto::DataType,
};

use super::split::SplitError;

const FLOAT: i32 = DataType::FLOAT as i32;
const FLOAT16: i32 = DataType::FLOAT16 as i32;

/// `part` (serialised ONNX) with its float weights in FP16 and its float
/// inputs and outputs unchanged.
pub(crate) fn half_precision(part: &[u8]) -> Result<Vec<u8>, SplitError> {
    let mut model =
        ModelProto::parse_from_bytes(part).map_err(|e| SplitError::Parse(e.to_string()))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| SplitError::Structure("no graph".into()))?;
    for tensor in &mut graph.initializer {
        halve(tensor)?;
    }
    for node in &mut graph.node {
        for a in &mut node.attribute {
            if a.name == "value_float" || a.name == "value_floats" {
                return Err(SplitError::Structure(format!(
                    "constant {} holds a float attribute",
                    node.name
                )));
            }
            if let Some(t) = a.t.as_mut() {
                halve(t)?;
            }
        }
    }
    cast_interface(graph);
    model
        .write_to_bytes()
        .map_err(|e| SplitError::Parse(e.to_string()))
}

/// Rewrites a float tensor as FP16 (raw little-endian halves); leaves
/// others as they are.
fn halve(t: &mut TensorProto) -> Result<(), SplitError> {
    if t.data_type != FLOAT {
        return Ok(());
    }
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return Err(SplitError::Parse(format!(
                "tensor {}: {} bytes of float data",
                t.name,
                t.raw_data.len()
            )));
        }
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        std::mem::take(&mut t.float_data)
    };
    t.raw_data = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    t.float_data.clear();
    t.data_type = FLOAT16;
    Ok(())
}

/// Puts a cast to FP16 after every float graph input and a cast back to
/// float before every float graph output, keeping their names.
fn cast_interface(graph: &mut GraphProto) {
    let float = |v: &onnx_protobuf::ValueInfoProto| {
        v.type_
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .is_some_and(|v| {
                matches!(v, onnx_protobuf::type_proto::Value::TensorType(t) if t.elem_type == FLOAT)
            })
    };
    let inputs: Vec<String> = graph
        .input
        .iter()
        .filter(|v| float(v))
        .map(|v| v.name.clone())
        .collect();
    let outputs: Vec<String> = graph
        .output
        .iter()
        .filter(|v| float(v))
        .map(|v| v.name.clone())
        .collect();
    let mut first = Vec::new();
    for name in &inputs {
        let inner = format!("{name}/fp16");
        for node in &mut graph.node {
            for i in node.input.iter_mut().filter(|i| *i == name) {
                i.clone_from(&inner);
            }
        }
        first.push(cast(name, &inner, FLOAT16));
    }
    for name in &outputs {
        let inner = format!("{name}/fp16");
        for node in &mut graph.node {
            for o in node.output.iter_mut().filter(|o| *o == name) {
                o.clone_from(&inner);
            }
        }
        graph.node.push(cast(&inner, name, FLOAT));
    }
    first.append(&mut graph.node);
    graph.node = first;
}

fn cast(from: &str, to: &str, elem_type: i32) -> NodeProto {
    let mut attr = AttributeProto::new();
    attr.name = "to".into();
    attr.type_ = AttributeType::INT.into();
    attr.i = elem_type.into();
    let mut node = NodeProto::new();
    node.op_type = "Cast".into();
    node.name = format!("{to}/cast");
    node.input = vec![from.to_owned()];
    node.output = vec![to.to_owned()];
    node.attribute = vec![attr];
    node
}
