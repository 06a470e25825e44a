//! The device row and the error counts, on hand-made answers.

use tts_proto::v1::ListVoicesResponse;

use super::orchestrator::metric_rows;
use super::worker::device_row;
use crate::doctor::Status;
use crate::doctor::prom::Exposition;

#[test]
fn the_device_row_names_the_gpus_and_warns_when_memory_is_short() {
    use tts_proto::v1::{Gpu, Voice};
    let voice = |timestamps| Voice {
        timestamps,
        ..Voice::default()
    };
    let cpu = ListVoicesResponse {
        voices: vec![voice(true), voice(false)],
        device: "cpu".into(),
        version: "0.1.0".into(),
        ..ListVoicesResponse::default()
    };
    let r = device_row("http://w:7001", &cpu);
    assert_eq!(r.status, Status::Ok);
    assert!(
        r.detail.contains("cpu, 2 voices (1 with word timestamps)"),
        "{}",
        r.detail
    );
    let gpu = |free_mib: u64| Gpu {
        index: 0,
        name: "NVIDIA H100 80GB HBM3".into(),
        compute_capability: "9.0".into(),
        total_memory_bytes: 81_079 << 20,
        free_memory_bytes: free_mib << 20,
        driver_version: "13.0".into(),
    };
    let mut cuda = ListVoicesResponse {
        device: "cuda:0".into(),
        gpus: vec![gpu(80_000)],
        ..cpu.clone()
    };
    let r = device_row("http://w:7001", &cuda);
    assert_eq!(r.status, Status::Ok);
    assert!(
        r.detail.contains(
            "GPU 0 NVIDIA H100 80GB HBM3 (compute 9.0): 80000 of 81079 MiB free, driver 13.0"
        ),
        "{}",
        r.detail
    );
    cuda.gpus = vec![gpu(4_000)];
    assert_eq!(device_row("u", &cuda).status, Status::Warn, "5 % free");
    cuda.gpus.clear();
    assert_eq!(
        device_row("u", &cuda).status,
        Status::Warn,
        "no GPU reported"
    );
}

#[test]
fn error_counts_decide_the_status() {
    let metrics = Exposition::parse(
        "# TYPE tts_orchestrator_requests_total counter\n\
         tts_orchestrator_requests_total{outcome=\"completed\",code=\"none\"} 99\n\
         # TYPE tts_orchestrator_frames_total counter\n\
         tts_orchestrator_frames_total{hop=\"worker_to_orchestrator\",result=\"checksum_mismatch\"} 1\n",
    )
    .expect("parses");
    let rows = metric_rows(&metrics);
    let checksum = rows
        .iter()
        .find(|r| r.check.contains("checksum"))
        .expect("row");
    assert_eq!(checksum.status, Status::Fail);
    let failed = rows
        .iter()
        .find(|r| r.check.contains("failed"))
        .expect("row");
    assert_eq!(failed.status, Status::Ok);
}
