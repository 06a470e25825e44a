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

use super::split::{DECODER_OPS, SplitError};

const FLOAT: i32 = DataType::FLOAT as i32;
const FLOAT16: i32 = DataType::FLOAT16 as i32;

/// Largest finite FP16 value.
const HALF_MAX: f32 = 65_504.0;

/// `part` (serialised ONNX) with its float weights in FP16 and its float
/// inputs and outputs unchanged. Only a graph of the decoder's operators
/// (convolutions and pointwise arithmetic, which mean the same in either
/// precision) is converted; any other is refused.
pub(crate) fn half_precision(part: &[u8]) -> Result<Vec<u8>, SplitError> {
    let mut model =
        ModelProto::parse_from_bytes(part).map_err(|e| SplitError::Parse(e.to_string()))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| SplitError::Structure("no graph".into()))?;
    if let Some(node) = graph
        .node
        .iter()
        .find(|n| !DECODER_OPS.contains(&n.op_type.as_str()))
    {
        return Err(SplitError::Structure(format!(
            "{} ({}) is not converted to FP16",
            node.name, node.op_type
        )));
    }
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
    cast_interface(graph)?;
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
    if !t.external_data.is_empty() {
        return Err(SplitError::Structure(format!(
            "tensor {} is stored outside the model",
            t.name
        )));
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
    if let Some(v) = values.iter().find(|v| v.abs() > HALF_MAX) {
        return Err(SplitError::Structure(format!(
            "tensor {} holds {v}, beyond FP16's range",
            t.name
        )));
    }
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
fn cast_interface(graph: &mut GraphProto) -> Result<(), SplitError> {
    let float = |v: &onnx_protobuf::ValueInfoProto| {
        v.type_
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .is_some_and(|v| {
                matches!(v, onnx_protobuf::type_proto::Value::TensorType(t) if t.elem_type == FLOAT)
            })
    };
    // An initializer listed among the inputs is a weight, already halved.
    let inputs: Vec<String> = graph
        .input
        .iter()
        .filter(|v| float(v) && !graph.initializer.iter().any(|t| t.name == v.name))
        .map(|v| v.name.clone())
        .collect();
    let outputs: Vec<String> = graph
        .output
        .iter()
        .filter(|v| float(v))
        .map(|v| v.name.clone())
        .collect();
    if let Some(both) = inputs.iter().find(|i| outputs.contains(i)) {
        return Err(SplitError::Structure(format!(
            "{both} is both an input and an output"
        )));
    }
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
        // Its producer and any node that reads it inside take the FP16
        // value.
        for node in &mut graph.node {
            for n in node.output.iter_mut().chain(&mut node.input) {
                if n == name {
                    n.clone_from(&inner);
                }
            }
        }
        graph.node.push(cast(&inner, name, FLOAT));
    }
    first.append(&mut graph.node);
    graph.node = first;
    Ok(())
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

#[cfg(test)]
mod tests {
    use onnx_protobuf::{TypeProto, ValueInfoProto, type_proto};

    use super::*;

    fn float_value(name: &str) -> ValueInfoProto {
        let mut tensor = type_proto::Tensor::new();
        tensor.elem_type = FLOAT;
        let mut ty = TypeProto::new();
        ty.value = Some(type_proto::Value::TensorType(tensor));
        let mut v = ValueInfoProto::new();
        v.name = name.into();
        v.type_ = protobuf::MessageField::some(ty);
        v
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = format!("{op}_{output}");
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n
    }

    /// `x → Conv(w) → y → Add(y, y) → out`.
    fn model(weight: f32, op: &str) -> Vec<u8> {
        let mut w = TensorProto::new();
        w.name = "w".into();
        w.data_type = FLOAT;
        w.dims = vec![1, 1, 1];
        w.float_data = vec![weight];
        let mut graph = GraphProto::new();
        graph.node = vec![node(op, &["x", "w"], "y"), node("Add", &["y", "y"], "out")];
        graph.initializer = vec![w];
        graph.input = vec![float_value("x")];
        graph.output = vec![float_value("out")];
        let mut m = ModelProto::new();
        m.graph = protobuf::MessageField::some(graph);
        m.write_to_bytes().expect("encodes")
    }

    #[test]
    fn weights_become_halves_behind_float_casts() {
        let half = half_precision(&model(0.333_333_34, "Conv")).expect("converts");
        let m = ModelProto::parse_from_bytes(&half).expect("parses");
        let g = m.graph.as_ref().expect("graph");
        let w = &g.initializer[0];
        assert_eq!(w.data_type, FLOAT16);
        assert!(w.float_data.is_empty());
        let bits = u16::from_le_bytes([w.raw_data[0], w.raw_data[1]]);
        assert_eq!(bits, half::f16::from_f32(0.333_333_34).to_bits());
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Cast", "Conv", "Add", "Cast"]);
        let (first, last) = (&g.node[0], &g.node[3]);
        assert_eq!((first.input[0].as_str(), first.attribute[0].i), ("x", 10));
        assert_eq!(
            g.node[1].input[0], first.output[0],
            "Conv reads the FP16 input"
        );
        assert_eq!((last.output[0].as_str(), last.attribute[0].i), ("out", 1));
        assert_eq!(g.node[2].output[0], last.input[0]);
        assert_eq!(g.input[0].name, "x");
        assert_eq!(g.output[0].name, "out");
    }

    #[test]
    fn what_fp16_cannot_hold_is_refused() {
        assert!(half_precision(&model(1e5, "Conv")).is_err(), "beyond 65504");
        assert!(
            half_precision(&model(1.0, "Resize")).is_err(),
            "an operator outside the decoder's"
        );
        assert!(half_precision(b"not a model").is_err());
    }
}
