use super::*;

fn raw(headers: &[(&'static str, &'static [u8])]) -> Vec<httparse::Header<'static>> {
    headers
        .iter()
        .map(|&(name, value)| httparse::Header { name, value })
        .collect()
}

fn on() -> Compression {
    Compression::with_defaults(Encoding::DEFAULT_ORDER.to_vec())
}

fn ask(c: &Compression, accept: &'static [u8]) -> Asked {
    asked(
        Some(c),
        "GET",
        false,
        &raw(&[("Accept-Encoding", accept)])[..],
    )
}

#[test]
fn q_values_choose_and_ties_go_to_the_route_order() {
    let c = on();
    assert_eq!(ask(&c, b"gzip, deflate, br"), Asked::Use(Encoding::Br));
    assert_eq!(ask(&c, b"gzip, zstd"), Asked::Use(Encoding::Zstd));
    assert_eq!(ask(&c, b"br;q=0, gzip"), Asked::Use(Encoding::Gzip));
    assert_eq!(ask(&c, b"br;q=0.5, gzip;q=0.8"), Asked::Use(Encoding::Gzip));
    assert_eq!(ask(&c, b"br;q=1.0, gzip;q=1"), Asked::Use(Encoding::Br));
    assert_eq!(ask(&c, b"*"), Asked::Use(Encoding::Br));
    assert_eq!(ask(&c, b"*;q=0"), Asked::VaryOnly);
    assert_eq!(ask(&c, b"*;q=0, gzip"), Asked::Use(Encoding::Gzip));
    assert_eq!(ask(&c, b"gzip;q=0, *"), Asked::Use(Encoding::Br));
    assert_eq!(ask(&c, b"identity"), Asked::VaryOnly);
    assert_eq!(ask(&c, b"gzip;q=0.5, identity"), Asked::VaryOnly);
    assert_eq!(ask(&c, b"gzip, identity;q=0"), Asked::Use(Encoding::Gzip));
    assert_eq!(ask(&c, b"deflate"), Asked::VaryOnly);
    assert_eq!(ask(&c, b"GZIP;Q=0.3"), Asked::Use(Encoding::Gzip));
    assert_eq!(ask(&c, b"gzip;q=2, br;q=x"), Asked::VaryOnly);
    assert_eq!(ask(&c, b""), Asked::VaryOnly);
    let gzip_first = Compression::with_defaults(vec![Encoding::Gzip, Encoding::Br]);
    assert_eq!(
        ask(&gzip_first, b"br, gzip, zstd"),
        Asked::Use(Encoding::Gzip)
    );
    assert_eq!(ask(&gzip_first, b"zstd"), Asked::VaryOnly);
}

#[test]
fn head_range_and_http10_only_vary() {
    let c = on();
    let ae = raw(&[("Accept-Encoding", b"gzip")]);
    assert_eq!(asked(Some(&c), "HEAD", false, &ae[..]), Asked::VaryOnly);
    assert_eq!(asked(Some(&c), "GET", true, &ae[..]), Asked::VaryOnly);
    let ranged = raw(&[("Accept-Encoding", b"gzip"), ("Range", b"bytes=0-1")]);
    assert_eq!(asked(Some(&c), "GET", false, &ranged[..]), Asked::VaryOnly);
    assert_eq!(asked(None, "GET", false, &ae[..]), Asked::Off);
}

#[test]
fn verdicts() {
    let c = on();
    let gz = Asked::Use(Encoding::Gzip);
    let v = |status, lines: &[(&'static str, &'static [u8])]| {
        verdict(Some(&c), gz, status, &raw(lines)[..])
    };
    let json = ("Content-Type", &b"application/json; charset=utf-8"[..]);
    assert_eq!(v(200, &[json]), Verdict::Compress(Encoding::Gzip));
    assert_eq!(
        v(404, &[("content-type", b"text/html")]),
        Verdict::Compress(Encoding::Gzip)
    );
    assert_eq!(
        v(200, &[("Content-Type", b"application/problem+json")]),
        Verdict::Compress(Encoding::Gzip)
    );
    assert_eq!(
        v(200, &[("Content-Type", b"image/png")]),
        Verdict::Untouched
    );
    assert_eq!(v(200, &[]), Verdict::Untouched);
    assert_eq!(v(204, &[json]), Verdict::Untouched);
    assert_eq!(v(304, &[json]), Verdict::Untouched);
    assert_eq!(v(206, &[json]), Verdict::Untouched);
    assert_eq!(
        v(200, &[json, ("Content-Encoding", b"gzip")]),
        Verdict::Untouched
    );
    assert_eq!(
        v(200, &[json, ("Content-Encoding", b"identity")]),
        Verdict::Compress(Encoding::Gzip)
    );
    assert_eq!(
        v(200, &[json, ("Cache-Control", b"public, No-Transform")]),
        Verdict::Untouched
    );
    assert_eq!(v(200, &[json, ("Content-Length", b"100")]), Verdict::Vary);
    assert_eq!(
        v(200, &[json, ("Content-Length", b"512")]),
        Verdict::Compress(Encoding::Gzip)
    );
    let lines = raw(&[json]);
    assert_eq!(
        verdict(Some(&c), Asked::VaryOnly, 200, &lines[..]),
        Verdict::Vary
    );
    assert_eq!(
        verdict(Some(&c), Asked::Off, 200, &lines[..]),
        Verdict::Untouched
    );
    assert_eq!(verdict(None, gz, 200, &lines[..]), Verdict::Untouched);
}

#[test]
fn type_patterns() {
    assert_eq!(TypePattern::parse("*"), Some(TypePattern::Any));
    assert_eq!(
        TypePattern::parse("Text/*"),
        Some(TypePattern::Family("text/".into()))
    );
    assert_eq!(
        TypePattern::parse("*+json"),
        Some(TypePattern::Suffix("+json".into()))
    );
    assert_eq!(
        TypePattern::parse("application/json"),
        Some(TypePattern::Exact("application/json".into()))
    );
    for bad in [
        "",
        "json",
        "text/",
        "/json",
        "text/html; charset=x",
        "a b/c",
    ] {
        assert_eq!(TypePattern::parse(bad), None, "{bad}");
    }
    let c = Compression {
        encodings: vec![Encoding::Gzip],
        types: vec![TypePattern::Exact("application/x-custom".into())],
        min_size: 0,
    };
    assert!(c.compressible(b"Application/X-Custom;v=1"));
    assert!(!c.compressible(b"text/html"));
}

fn rewritten(verdict: Verdict, lines: &[(&'static str, &'static [u8])]) -> String {
    let mut out = Vec::new();
    let mut w = Rewrite::new(verdict, &mut out);
    for (n, v) in lines {
        w.header(n.as_bytes(), v);
    }
    w.finish();
    String::from_utf8(out).unwrap()
}

#[test]
fn headers_of_a_compressed_response() {
    let got = rewritten(
        Verdict::Compress(Encoding::Br),
        &[
            ("ETag", b"\"abc\""),
            ("Vary", b"Origin"),
            ("content-length", b"2000"),
            ("Accept-Ranges", b"bytes"),
            ("Transfer-Encoding", b"chunked"),
            ("X-A", b"1"),
        ],
    );
    assert_eq!(
        got,
        "ETag: W/\"abc\"\r\nVary: Origin, Accept-Encoding\r\nX-A: 1\r\n\
         content-encoding: br\r\ntransfer-encoding: chunked\r\n"
    );
    let got = rewritten(Verdict::Compress(Encoding::Gzip), &[("etag", b"W/\"x\"")]);
    assert!(
        got.starts_with("etag: W/\"x\"\r\nvary: Accept-Encoding\r\n"),
        "{got}"
    );
}

#[test]
fn vary_is_merged_once() {
    let got = rewritten(
        Verdict::Vary,
        &[("Vary", b"accept-encoding"), ("Content-Length", b"5")],
    );
    assert_eq!(got, "Vary: accept-encoding\r\nContent-Length: 5\r\n");
    let got = rewritten(Verdict::Vary, &[("Vary", b"*")]);
    assert_eq!(got, "Vary: *\r\n");
    let got = rewritten(Verdict::Vary, &[("ETag", b"\"a\"")]);
    assert_eq!(got, "ETag: \"a\"\r\nvary: Accept-Encoding\r\n");
    let got = rewritten(Verdict::Untouched, &[("ETag", b"\"a\"")]);
    assert_eq!(got, "ETag: \"a\"\r\n");
}
