//! Tests of the JSON parser and the Python-compatible writer; the expected strings were
//! printed by Python 3.11's `json.dumps`.

#![allow(clippy::unwrap_used)]

use super::*;

fn dumps(bytes: &str) -> String {
    Json::parse(bytes.as_bytes()).unwrap().to_python_json()
}

fn float(f: f64) -> String {
    Json::Float(f).to_python_json()
}

fn err(bytes: &[u8]) -> String {
    Json::parse(bytes).unwrap_err()
}

#[test]
fn python_mixed_document() {
    // python3 -c 'import json; print(json.dumps({"a": [1, 2.5, None, True, "é😀\n"],
    //   "b": 1e16, "c": 0.0001, "d": 1e-05, "e": 3.0, "f": -0.0, "g": 6.77}))'
    let value = object([
        (
            "a",
            Json::Array(vec![
                Json::Int(1),
                Json::Float(2.5),
                Json::Null,
                Json::Bool(true),
                "é😀\n".into(),
            ]),
        ),
        ("b", 1e16.into()),
        ("c", 0.0001.into()),
        ("d", 1e-05.into()),
        ("e", 3.0.into()),
        ("f", (-0.0).into()),
        ("g", 6.77.into()),
    ]);
    let expected = r#"{"a": [1, 2.5, null, true, "\u00e9\ud83d\ude00\n"], "b": 1e+16, "c": 0.0001, "d": 1e-05, "e": 3.0, "f": -0.0, "g": 6.77}"#;
    assert_eq!(value.to_python_json(), expected);
    assert_eq!(Json::parse(expected.as_bytes()).unwrap(), value);
}

#[test]
fn python_string_escapes() {
    // python3 -c 'import json; print(json.dumps("\x7f/\x00\x1f\x08\x0c\t\r\"\\ ~\u2028\uffff"))'
    let s = Json::from("\u{7f}/\u{0}\u{1f}\u{8}\u{c}\t\r\"\\ ~\u{2028}\u{ffff}");
    let expected = r#""\u007f/\u0000\u001f\b\f\t\r\"\\ ~\u2028\uffff""#;
    assert_eq!(s.to_python_json(), expected);
    assert_eq!(Json::parse(expected.as_bytes()).unwrap(), s);
    // python3 -c 'import json; print(json.dumps({"k\u00e9": "v"}))'
    assert_eq!(
        object([("ké", "v".into())]).to_python_json(),
        r#"{"k\u00e9": "v"}"#
    );
}

#[test]
fn python_float_repr() {
    // Each pair: python3 -c 'import json; print(json.dumps(X))'.
    let cases: [(f64, &str); 28] = [
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (1234567890123456.0, "1234567890123456.0"),
        (9999999999999998.0, "9999999999999998.0"),
        (0.0001, "0.0001"),
        (0.00012345, "0.00012345"),
        (1e-05, "1e-05"),
        (1.5e-07, "1.5e-07"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (1e100, "1e+100"),
        (1e-100, "1e-100"),
        (0.1, "0.1"),
        (0.3, "0.3"),
        (1.0 / 3.0, "0.3333333333333333"),
        (123.456, "123.456"),
        (-2.5, "-2.5"),
        (1e15, "1000000000000000.0"),
        (1e22, "1e+22"),
        (9223372036854775808.0, "9.223372036854776e+18"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
        (100.0, "100.0"),
        (0.0, "0.0"),
        // Exactly ...702.125 and ...744.25: two equally short strings round-trip, Rust's `{:e}`
        // takes the upper, Python the nearer (a tie: half to even).
        (87829832555702.12, "87829832555702.12"),
        (946052601191744.2, "946052601191744.2"),
        (0.3 + 0.6, "0.8999999999999999"),
    ];
    for (f, expected) in cases {
        assert_eq!(float(f), expected, "{f:?}");
    }
    assert_eq!(float(-0.0), "-0.0");
    assert_eq!(float(-1e-05), "-1e-05");
    assert_eq!(float(-1.5e16), "-1.5e+16");
}

#[test]
fn python_containers_and_ints() {
    // python3 -c 'import json; print(json.dumps([]), json.dumps({}), json.dumps([[], {}, {"x": {}}]))'
    assert_eq!(Json::Array(vec![]).to_python_json(), "[]");
    assert_eq!(Json::Object(vec![]).to_python_json(), "{}");
    assert_eq!(dumps(r#"[[],{},{"x":{}}]"#), r#"[[], {}, {"x": {}}]"#);
    // python3 -c 'import json; print(json.dumps([-9223372036854775808, 9223372036854775807, 0]))'
    assert_eq!(
        dumps("[-9223372036854775808,9223372036854775807,0]"),
        "[-9223372036854775808, 9223372036854775807, 0]"
    );
}

#[test]
fn python_loads_then_dumps() {
    // Each pair: python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])))' X
    let cases = [
        (r#""\ud83d\ude00""#, r#""\ud83d\ude00""#),
        (r#""\uD83D\uDE00""#, r#""\ud83d\ude00""#),
        ("[1e400]", "[Infinity]"),
        ("-0", "0"),
        ("-0.0", "-0.0"),
        ("1E2", "100.0"),
        ("1e+2", "100.0"),
        ("-Infinity", "-Infinity"),
        ("NaN", "NaN"),
        (" \t\n\r1 \n", "1"),
        (r#""\/""#, r#""/""#),
    ];
    for (input, expected) in cases {
        assert_eq!(dumps(input), expected, "{input}");
    }
    // A leading UTF-8 BOM is skipped, as json.loads(b'\xef\xbb\xbf1') does.
    assert_eq!(Json::parse(b"\xEF\xBB\xBF1").unwrap(), Json::Int(1));
}

#[test]
fn numbers_parse_to_int_or_float() {
    assert_eq!(Json::parse(b"42").unwrap(), Json::Int(42));
    assert_eq!(Json::parse(b"-0").unwrap(), Json::Int(0));
    assert_eq!(Json::parse(b"1.0").unwrap(), Json::Float(1.0));
    assert_eq!(Json::parse(b"1e2").unwrap(), Json::Float(100.0));
    assert_eq!(Json::parse(b"-2.5E-3").unwrap(), Json::Float(-0.0025));
    // Python keeps 99999999999999999999 exact; we fall back to a float.
    assert_eq!(
        Json::parse(b"99999999999999999999").unwrap(),
        Json::Float(1e20)
    );
    assert_eq!(
        Json::parse(b"9223372036854775808").unwrap(),
        Json::Float(9.223372036854776e18)
    );
    let neg = Json::parse(b"-Infinity").unwrap();
    assert_eq!(neg, Json::Float(f64::NEG_INFINITY));
    assert!(matches!(Json::parse(b"NaN").unwrap(), Json::Float(f) if f.is_nan()));
}

#[test]
fn surrogates() {
    let lone = |s: &str| Json::parse(s.as_bytes()).unwrap();
    assert_eq!(lone(r#""\ud83d""#), Json::from("\u{fffd}"));
    assert_eq!(lone(r#""\ude00x""#), Json::from("\u{fffd}x"));
    assert_eq!(lone(r#""\ud83dA""#), Json::from("\u{fffd}A"));
    assert_eq!(lone(r#""\ud83d\u0041""#), Json::from("\u{fffd}A"));
    assert_eq!(lone(r#""\ud83d\ud83d\ude00""#), Json::from("\u{fffd}😀"));
    assert!(err(br#""\ud83d\u00zz""#).contains("\\uXXXX"));
}

#[test]
fn round_trips() {
    let value = object([
        ("null", Json::Null),
        ("false", false.into()),
        ("int", (-7i64).into()),
        ("big", u64::MAX.into()),
        ("count", 3usize.into()),
        ("i32", 5i32.into()),
        ("none", Option::<i64>::None.into()),
        ("some", Some("x").into()),
        ("owned", String::from("ä\u{0}\"\\").into()),
        (
            "list",
            vec![Json::Float(0.5), Json::Array(vec![]), object([])].into(),
        ),
        ("dup", 1i64.into()),
        ("dup", 2i64.into()),
    ]);
    let text = value.to_python_json();
    assert_eq!(Json::parse(text.as_bytes()).unwrap(), value);
    assert_eq!(value.get("dup"), Some(&Json::Int(1)));
    assert_eq!(value.get("big"), Some(&Json::Float(1.8446744073709552e19)));
    assert_eq!(value.get("missing"), None);
    assert_eq!(Json::Int(1).get("a"), None);
    for f in [0.1, 1e300, -4.9e-324, 123456789.125, 1e-7, 2.0f64.powi(60)] {
        assert_eq!(Json::parse(float(f).as_bytes()).unwrap(), Json::Float(f));
    }
}

#[test]
fn depth_limit() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(Json::parse(nested(MAX_DEPTH).as_bytes()).is_ok());
    assert!(err(nested(MAX_DEPTH + 1).as_bytes()).contains("too deep"));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129));
    assert!(err(objects.as_bytes()).contains("too deep"));
    // Far deeper than the stack could take: refused quickly, no overflow.
    assert!(err("[".repeat(1 << 20).as_bytes()).contains("too deep"));
}

#[test]
fn parse_errors() {
    let cases: [(&[u8], &str); 24] = [
        (b"", "expecting value at byte 0"),
        (b"  ", "expecting value at byte 2"),
        (b"1 x", "extra data at byte 2"),
        (b"true false", "extra data at byte 5"),
        (b"\"\xff\"", "invalid UTF-8 at byte 1"),
        (b"\"abc", "unterminated string starting at byte 0"),
        (b"[\"a\\", "invalid \\escape at byte 3"),
        (b"\"a\nb\"", "invalid control character at byte 2"),
        (b"\"a\tb\"", "invalid control character at byte 2"),
        (b"\"\\x\"", "invalid \\escape at byte 1"),
        (b"\"\\u12\"", "invalid \\uXXXX escape at byte 3"),
        (b"01", "extra data at byte 1"),
        (b"-01", "extra data at byte 2"),
        (b"-", "expecting value at byte 0"),
        (b"+1", "expecting value at byte 0"),
        (b"1.", "extra data at byte 1"),
        (b".5", "expecting value at byte 0"),
        (b"1e", "extra data at byte 1"),
        (b"[1,]", "expecting value at byte 3"),
        (b"[1 2]", "expecting ',' or ']' at byte 3"),
        (
            b"{\"a\":1,}",
            "expecting property name in double quotes at byte 7",
        ),
        (
            b"{1:2}",
            "expecting property name in double quotes at byte 1",
        ),
        (b"{\"a\" 1}", "expecting ':' at byte 5"),
        (b"-NaN", "expecting value at byte 0"),
    ];
    for (input, expected) in cases {
        assert_eq!(err(input), expected, "{:?}", String::from_utf8_lossy(input));
    }
    for input in [
        "nan",
        "'a'",
        "tru",
        "[",
        "{",
        "{\"a\":1",
        "\u{feff}\u{feff}1",
    ] {
        assert!(Json::parse(input.as_bytes()).is_err(), "{input}");
    }
}

#[test]
fn large_input_is_linear() {
    let big = format!("[{}\"{}\"]", "1, ".repeat(1 << 20), "é".repeat(1 << 21));
    let value = Json::parse(big.as_bytes()).unwrap();
    let Json::Array(items) = &value else { panic!() };
    assert_eq!(items.len(), (1 << 20) + 1);
    assert_eq!(
        Json::parse(value.to_python_json().as_bytes()).unwrap(),
        value
    );
}
