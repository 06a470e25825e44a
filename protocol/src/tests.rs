//! The contract's messages: read, checked, written.

use serde_json::Value;

use crate::*;

#[test]
fn parses_every_client_message() {
    assert_eq!(
        Command::parse(
            r#"{"type":"synthesize","text":"Hi","voice":"v","request_id":"r","trace_id":"t"}"#
        ),
        Ok(Command::Synthesize {
            text: "Hi".into(),
            voice: Some("v".into()),
            request_id: Some("r".into()),
            trace_id: Some("t".into()),
            delivery: Delivery::Realtime,
            options: Options::default(),
        })
    );
    assert_eq!(
        Command::parse(r#"{"text":"Hello world","trace_id":"abc"}"#),
        Ok(Command::Synthesize {
            text: "Hello world".into(),
            voice: None,
            request_id: None,
            trace_id: Some("abc".into()),
            delivery: Delivery::Realtime,
            options: Options::default(),
        })
    );
    assert_eq!(
        Command::parse(r#"{"type":"ping","id":7}"#),
        Ok(Command::Ping {
            id: 7.into(),
            deep: false
        })
    );
    assert_eq!(
        Command::parse(r#"{"type":"ping","id":"a","deep":true}"#),
        Ok(Command::Ping {
            id: "a".into(),
            deep: true
        })
    );
    assert_eq!(
        Command::parse(r#"{"type":"cancel","request_id":"r1"}"#),
        Ok(Command::Cancel {
            request_id: "r1".into()
        })
    );
}

#[test]
fn options_are_parsed_and_each_bad_one_is_named() {
    let m = Command::parse(
        r#"{"type":"synthesize","text":"Hi","speed":1.5,"noise_w":0.2,"encoding":"mulaw"}"#,
    );
    let Ok(Command::Synthesize { options, .. }) = m else {
        panic!("{m:?}");
    };
    assert_eq!(options.speed, 1.5);
    assert_eq!((options.noise_scale, options.noise_w), (None, Some(0.2)));
    assert_eq!(options.format.sample_rate, 8_000);
    let refused = |raw: &str| match Command::parse(raw) {
        Err(e) => e.to_string(),
        Ok(m) => panic!("accepted {m:?}"),
    };
    let base = r#"{"type":"synthesize","text":"Hi","#;
    assert!(refused(&format!(r#"{base}"speed":9}}"#)).contains("\"speed\""));
    assert!(refused(&format!(r#"{base}"speed":"fast"}}"#)).contains("\"speed\""));
    assert!(refused(&format!(r#"{base}"noise_scale":-1}}"#)).contains("noise_scale"));
    assert!(refused(&format!(r#"{base}"sample_rate":44100}}"#)).contains("sample_rate"));
    assert!(refused(&format!(r#"{base}"encoding":"mp3"}}"#)).contains("encoding"));
    assert!(refused(&format!(r#"{base}"timestamps":"yes"}}"#)).contains("timestamps"));
    assert!(matches!(
        Command::parse(&format!(r#"{base}"timestamps":true}}"#)),
        Ok(Command::Synthesize { options, .. }) if options.timestamps
    ));
    let opus = refused(&format!(r#"{base}"encoding":"opus","sample_rate":8000}}"#));
    assert!(opus.contains("opus") && opus.contains("48000"), "{opus}");
    assert_eq!(Command::parse(r#"{"type":"voices"}"#), Ok(Command::Voices));
    assert!(matches!(
        Command::parse(r#"{"type":"context_open","request_id":"c","encoding":"opus"}"#),
        Ok(Command::ContextOpen { options, .. }) if options.format.encoding == Encoding::Opus
    ));
    assert_eq!(
        Command::parse(r#"{"type":"append","request_id":"c","text":"Hel"}"#),
        Ok(Command::Append {
            request_id: "c".into(),
            text: "Hel".into()
        })
    );
    assert!(matches!(
        Command::parse(r#"{"type":"append","request_id":"c"}"#),
        Err(ParseError::Field { field: "text", .. })
    ));
    assert_eq!(
        Command::parse(r#"{"type":"close","request_id":"c"}"#),
        Ok(Command::Close {
            request_id: "c".into()
        })
    );
}

#[test]
fn delivery_is_realtime_unless_fast_is_asked_for() {
    let fast = Command::parse(r#"{"type":"synthesize","text":"Hi","delivery":"fast"}"#);
    assert!(matches!(
        fast,
        Ok(Command::Synthesize {
            delivery: Delivery::Fast,
            ..
        })
    ));
    assert_eq!(
        Command::parse(r#"{"type":"synthesize","text":"Hi","delivery":"slow"}"#),
        Err(ParseError::Value {
            field: "delivery",
            allowed: "\"realtime\", \"fast\""
        })
    );
}

#[test]
fn refuses_malformed_messages() {
    assert!(matches!(
        Command::parse("not json"),
        Err(ParseError::NotJson(_))
    ));
    assert_eq!(Command::parse("[1]"), Err(ParseError::NotObject));
    assert_eq!(
        Command::parse(r#"{"type":"dance"}"#),
        Err(ParseError::UnknownType("dance".into()))
    );
    assert!(matches!(
        Command::parse(r#"{"type":"synthesize"}"#),
        Err(ParseError::Field { field: "text", .. })
    ));
    assert!(matches!(
        Command::parse(r#"{"type":"synthesize","text":5}"#),
        Err(ParseError::Field { field: "text", .. })
    ));
    assert!(matches!(
        Command::parse(r#"{"type":"cancel"}"#),
        Err(ParseError::Field {
            field: "request_id",
            ..
        })
    ));
    assert!(matches!(
        Command::parse(r#"{"type":"ping"}"#),
        Err(ParseError::Field { field: "id", .. })
    ));
    assert!(Command::parse(r#"{"hello":1}"#).is_err());
}

#[test]
fn codes_round_trip_and_say_who_was_at_fault() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
    }
    assert_eq!(ErrorCode::TextTooLong.outcome(), Outcome::ClientError);
    assert_eq!(ErrorCode::Overloaded.outcome(), Outcome::Refused);
    assert_eq!(ErrorCode::WorkerUnavailable.outcome(), Outcome::Failed);
    assert_eq!(ErrorCode::from_wire("nonsense"), None);
}

#[test]
fn server_messages_parse_back() {
    let err = ServerMessage::Error {
        code: ErrorCode::Overloaded,
        message: "full".into(),
        request_id: Some("r".into()),
        retry_after_ms: Some(250),
    };
    assert_eq!(ServerMessage::parse(&err.to_json()).expect("parses"), err);
    let pong = ServerMessage::parse(r#"{"type":"pong","id":3,"server_time_us":5}"#)
        .expect("a pong without worker fields");
    assert!(matches!(
        pong,
        ServerMessage::Pong {
            worker_rtt_us: None,
            ..
        }
    ));
    assert_eq!(err.request_id(), Some("r"));
}

#[test]
fn server_messages_match_the_contract() {
    let ready: Value = serde_json::from_str(
        &ServerMessage::Ready {
            session_id: "s".into(),
            protocol: 1,
            sample_rate: 48_000,
            channels: 1,
            frame_samples: 960,
            encoding: "pcm_s16le".into(),
        }
        .to_json(),
    )
    .expect("json");
    assert_eq!(
        ready,
        serde_json::json!({"type":"ready","session_id":"s","protocol":1,"sample_rate":48000,
            "channels":1,"frame_samples":960,"encoding":"pcm_s16le"})
    );
    let err: Value = serde_json::from_str(
        &ServerMessage::error(ErrorCode::TextTooLong, "too long", None).to_json(),
    )
    .expect("json");
    assert_eq!(
        err,
        serde_json::json!({"type":"error","code":"text_too_long","message":"too long"})
    );
    let end: Value = serde_json::from_str(
        &ServerMessage::End {
            request_id: "r".into(),
            stream_id: 3,
            frames: 10,
            samples: 9_500,
            cancelled: false,
        }
        .to_json(),
    )
    .expect("json");
    assert_eq!(
        end,
        serde_json::json!({"type":"end","request_id":"r","stream_id":3,"frames":10,
            "samples":9500,"cancelled":false})
    );
}

#[test]
fn every_client_message_reads_back_as_it_was_written() {
    let full = RequestOptions {
        request_id: Some("r1".into()),
        trace_id: Some("t1".into()),
        voice: Some("joe".into()),
        delivery: Delivery::Fast,
        speed: Some(1.5),
        noise_scale: Some(0.25),
        noise_w: Some(0.5),
        encoding: Some(Encoding::Mulaw),
        sample_rate: Some(8_000),
        timestamps: true,
    };
    let messages = [
        ClientMessage::synthesize("Hi", RequestOptions::default()),
        ClientMessage::synthesize("Hi", full.clone()),
        ClientMessage::Voices,
        ClientMessage::ContextOpen { options: full },
        ClientMessage::Append {
            request_id: "c".into(),
            text: "Hel".into(),
        },
        ClientMessage::Flush {
            request_id: "c".into(),
        },
        ClientMessage::Close {
            request_id: "c".into(),
        },
        ClientMessage::Ping {
            id: 7.into(),
            deep: true,
        },
        ClientMessage::Ping {
            id: "a".into(),
            deep: false,
        },
        ClientMessage::Cancel {
            request_id: "r1".into(),
        },
    ];
    for m in messages {
        let json = m.to_json();
        assert_eq!(ClientMessage::parse(&json).as_ref(), Ok(&m), "{json}");
        let typed: ClientMessage = serde_json::from_str(&json).expect(&json);
        assert_eq!(typed, m);
        assert!(Command::parse(&json).is_ok(), "{json}");
    }
    // Defaults are left out of the JSON.
    assert_eq!(
        ClientMessage::synthesize("Hi", RequestOptions::default()).to_json(),
        r#"{"type":"synthesize","text":"Hi"}"#
    );
    let checked = Command::parse(
        &ClientMessage::synthesize(
            "Hi",
            RequestOptions {
                speed: Some(2.0),
                encoding: Some(Encoding::Opus),
                ..RequestOptions::default()
            },
        )
        .to_json(),
    );
    assert!(matches!(
        checked,
        Ok(Command::Synthesize { options, .. })
            if options.speed == 2.0 && options.format.encoding == Encoding::Opus
    ));
}

#[test]
fn a_message_reads_as_a_type_and_is_checked_as_a_command() {
    // Out of range is a valid message but not a valid command.
    let fast = r#"{"type":"synthesize","text":"Hi","speed":9}"#;
    let wire = ClientMessage::parse(fast).expect("typed");
    assert_eq!(wire.request_id(), None);
    assert_eq!(
        Command::try_from(wire),
        Err(ParseError::Range {
            field: "speed",
            min: 0.25,
            max: 4.0
        })
    );
    assert_eq!(
        Speed::new(0.1).map_err(|e| e.to_string()),
        Err("field \"speed\" must be between 0.25 and 4".into())
    );
    assert_eq!(Speed::default().get(), 1.0);
    assert!(Noise::new("noise_w", 1.5).is_err());
    let named = ClientMessage::parse(r#"{"type":"synthesize","text":"Hi","request_id":"r9"}"#)
        .expect("typed");
    assert_eq!(named.request_id(), Some("r9"));
}

#[test]
fn what_the_browser_page_sends_is_understood() {
    for sent in [
        r#"{"type":"voices"}"#,
        r#"{"type":"ping","id":3}"#,
        r#"{"type":"synthesize","request_id":"page-3f","text":"Hello.","speed":1}"#,
    ] {
        assert!(Command::parse(sent).is_ok(), "{sent}");
    }
}

#[test]
fn codes_render_and_parse_as_on_the_wire() {
    for code in ErrorCode::ALL {
        assert_eq!(code.to_string().parse::<ErrorCode>(), Ok(code));
    }
    assert!("nonsense".parse::<ErrorCode>().is_err());
    assert_eq!(Outcome::ClientError.to_string(), "client_error");
}
