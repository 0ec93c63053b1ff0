//! Unit tests of the strict reply decoding: what the real Maelstrom would reject must come out as
//! `Malformed`, and error codes must split into definite and indefinite as the spec says.

use std::collections::BTreeMap;

use serde_json::json;

use crate::workload::history::{Outcome, Request, Response};
use crate::workload::protocol::{decode_reply, request_body};

fn poll_k0() -> Request {
    Request::Poll {
        offsets: BTreeMap::from([("k0".to_owned(), 0)]),
    }
}

fn send_k0() -> Request {
    Request::Send {
        key: "k0".to_owned(),
        value: 7,
    }
}

fn is_malformed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Malformed { .. })
}

#[test]
fn request_bodies_follow_the_kafka_schema() {
    assert_eq!(
        request_body(&send_k0()),
        json!({"type": "send", "key": "k0", "msg": 7})
    );
    assert_eq!(
        request_body(&poll_k0()),
        json!({"type": "poll", "offsets": {"k0": 0}})
    );
    let list = Request::List {
        keys: vec!["k0".to_owned()],
    };
    assert_eq!(
        request_body(&list),
        json!({"type": "list_committed_offsets", "keys": ["k0"]})
    );
}

#[test]
fn decodes_well_formed_replies() {
    let send_ok = json!({"type": "send_ok", "in_reply_to": 3, "msg_id": 9, "offset": 4});
    assert_eq!(
        decode_reply(&send_k0(), &send_ok),
        Outcome::Ok {
            response: Response::Send { offset: 4 }
        }
    );
    let poll_ok = json!({"type": "poll_ok", "in_reply_to": 3, "msgs": {"k0": [[0, 5], [1, 6]]}});
    assert_eq!(
        decode_reply(&poll_k0(), &poll_ok),
        Outcome::Ok {
            response: Response::Poll {
                msgs: BTreeMap::from([("k0".to_owned(), vec![(0, 5), (1, 6)])])
            }
        }
    );
    let nothing = json!({"type": "poll_ok", "in_reply_to": 3, "msgs": {}});
    assert_eq!(
        decode_reply(&poll_k0(), &nothing),
        Outcome::Ok {
            response: Response::Poll {
                msgs: BTreeMap::new()
            }
        }
    );
}

#[test]
fn empty_list_in_poll_ok_is_malformed() {
    // Maelstrom's kafka checker throws on this, ending the whole run as unknown.
    let reply = json!({"type": "poll_ok", "in_reply_to": 3, "msgs": {"k0": []}});
    assert!(is_malformed(&decode_reply(&poll_k0(), &reply)));
}

#[test]
fn poll_ok_without_msgs_is_malformed() {
    let reply = json!({"type": "poll_ok", "in_reply_to": 3});
    assert!(is_malformed(&decode_reply(&poll_k0(), &reply)));
}

#[test]
fn extra_field_in_a_reply_is_malformed() {
    // Maelstrom's reply schemas are closed maps.
    let reply = json!({"type": "send_ok", "in_reply_to": 3, "offset": 4, "key": "k0"});
    assert!(is_malformed(&decode_reply(&send_k0(), &reply)));
}

#[test]
fn reply_of_the_wrong_type_is_malformed() {
    let reply = json!({"type": "poll_ok", "in_reply_to": 3, "msgs": {}});
    assert!(is_malformed(&decode_reply(&send_k0(), &reply)));
}

#[test]
fn definite_error_codes_are_failures() {
    for code in [1, 10, 11, 12, 14, 20, 21, 22, 30] {
        let reply = json!({"type": "error", "in_reply_to": 3, "code": code, "text": "no"});
        assert!(
            matches!(decode_reply(&send_k0(), &reply), Outcome::Fail { code: got, .. } if got == code),
            "code {code}"
        );
    }
}

#[test]
fn indefinite_error_codes_are_unknown() {
    for code in [0, 13, 1000, 1234] {
        let reply = json!({"type": "error", "in_reply_to": 3, "code": code, "text": "maybe"});
        assert!(
            matches!(decode_reply(&send_k0(), &reply), Outcome::Unknown { .. }),
            "code {code}"
        );
    }
}
