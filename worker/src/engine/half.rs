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
    let standard = |n: &NodeProto| n.domain.is_empty() || n.domain == "ai.onnx";
    if let Some(node) = graph
        .node
        .iter()
        .find(|n| !standard(n) || !DECODER_OPS.contains(&n.op_type.as_str()))
    {
        return Err(SplitError::Structure(format!(
            "{} ({} {}) is not converted to FP16",
            node.name, node.domain, node.op_type
        )));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(SplitError::Structure("sparse weights".into()));
    }
    // Shape hints name float types that are FP16 now; they are only hints.
    graph.value_info.clear();
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
    if let Some(weight) = outputs
        .iter()
        .find(|o| graph.initializer.iter().any(|t| &t.name == *o))
    {
        return Err(SplitError::Structure(format!(
            "output {weight} is a weight"
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
    use onnx_protobuf::ValueInfoProto;

    use super::*;
    use crate::engine::split::tensor_value;

    fn float_value(name: &str) -> ValueInfoProto {
        tensor_value(name, FLOAT)
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = format!("{op}_{output}");
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n
    }

    fn weight(name: &str, value: f32) -> TensorProto {
        let mut w = TensorProto::new();
        w.name = name.into();
        w.data_type = FLOAT;
        w.dims = vec![1, 1, 1];
        w.float_data = vec![value];
        w
    }

    /// `x → Conv(w) → y → Add(y, b) → out → Mul(out, out) → sq`, `out` and
    /// `sq` both outputs, the weight `w` listed among the inputs too.
    fn graph(w: f32, op: &str) -> GraphProto {
        let mut graph = GraphProto::new();
        graph.node = vec![
            node(op, &["x", "w"], "y"),
            node("Add", &["y", "b"], "out"),
            node("Mul", &["out", "out"], "sq"),
        ];
        graph.initializer = vec![weight("w", w), weight("b", 0.5)];
        graph.input = vec![float_value("x"), float_value("w")];
        graph.output = vec![float_value("out"), float_value("sq")];
        graph.value_info = vec![float_value("y")];
        graph
    }

    fn convert(graph: GraphProto) -> Result<GraphProto, SplitError> {
        let mut m = ModelProto::new();
        m.graph = protobuf::MessageField::some(graph);
        let half = half_precision(&m.write_to_bytes().expect("encodes"))?;
        let m = ModelProto::parse_from_bytes(&half).expect("parses");
        Ok(m.graph.into_option().expect("graph"))
    }

    fn refusal(graph: GraphProto) -> String {
        convert(graph).expect_err("refused").to_string()
    }

    #[test]
    fn weights_become_halves_behind_float_casts() {
        let g = convert(graph(0.333_333_34, "Conv")).expect("converts");
        let w = &g.initializer[0];
        assert_eq!((w.data_type, w.float_data.len()), (FLOAT16, 0));
        let bits = u16::from_le_bytes([w.raw_data[0], w.raw_data[1]]);
        assert_eq!(bits, half::f16::from_f32(0.333_333_34).to_bits());
        assert!(g.value_info.is_empty(), "no float hints left");
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Cast", "Conv", "Add", "Mul", "Cast", "Cast"]);
        // Only `x` is cast in: `w` is a weight, already halved.
        let cast_in = &g.node[0];
        assert_eq!(
            (cast_in.input[0].as_str(), cast_in.attribute[0].i),
            ("x", 10)
        );
        assert_eq!(g.node[1].input, [cast_in.output[0].as_str(), "w"]);
        // `out` is read inside as FP16 and cast out under its own name.
        let (add, mul) = (&g.node[2], &g.node[3]);
        assert_eq!(mul.input, [add.output[0].clone(), add.output[0].clone()]);
        let outs: Vec<(&str, &str, i64)> = g.node[4..]
            .iter()
            .map(|n| (n.input[0].as_str(), n.output[0].as_str(), n.attribute[0].i))
            .collect();
        assert_eq!(
            outs,
            [
                (add.output[0].as_str(), "out", 1),
                (mul.output[0].as_str(), "sq", 1)
            ]
        );
        let names = |v: &[ValueInfoProto]| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            (names(&g.input), names(&g.output)),
            (
                vec!["x".to_owned(), "w".to_owned()],
                vec!["out".to_owned(), "sq".to_owned()]
            )
        );
    }

    #[test]
    fn what_fp16_cannot_hold_is_refused() {
        assert!(refusal(graph(1e5, "Conv")).contains("beyond FP16"));
        assert!(refusal(graph(1.0, "Resize")).contains("Resize"));
        let mut custom = graph(1.0, "Conv");
        custom.node[0].domain = "com.example".into();
        assert!(refusal(custom).contains("com.example"));
        let mut through = graph(1.0, "Conv");
        through.output.push(float_value("x"));
        assert!(refusal(through).contains("both an input and an output"));
        let mut weight_out = graph(1.0, "Conv");
        weight_out.output.push(float_value("b"));
        assert!(refusal(weight_out).contains("is a weight"));
        let mut outside = graph(1.0, "Conv");
        let mut location = onnx_protobuf::StringStringEntryProto::new();
        location.key = "location".into();
        location.value = "w.bin".into();
        outside.initializer[0].external_data.push(location);
        assert!(refusal(outside).contains("outside the model"));
        assert!(half_precision(b"not a model").is_err());
    }
}
