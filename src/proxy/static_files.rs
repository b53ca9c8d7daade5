//! Static-file routes (nginx `alias`): maps the path after the route prefix into a directory,
//! with Content-Type, Last-Modified/ETag (304) and HEAD. Nothing outside the directory is
//! served: `..` (encoded or not) is refused and symlinks are resolved before the check. With
//! `precompressed`, a `file.br`, `file.zst` or `file.gz` beside the file is sent instead when
//! the client accepts it (nginx `gzip_static`, Caddy `precompressed`), chosen by the one
//! Accept-Encoding rule (`crate::request::compress`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http::Method;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::io::AsyncReadExt;

use super::respond;
use crate::request::compress::{self, Asked, Compression, Encoding};
use crate::request::headers::HSTS;

const CHUNK: usize = 64 << 10;

/// Serves `rel` (the request path after the route prefix, still percent-encoded) from `root`
/// (a canonical directory). Returns the status written.
/// `hsts`: add `Strict-Transport-Security` to files served (an https route with `hsts: true`);
/// `precompressed`: look for compressed variants beside the file.
pub async fn serve(
    session: &mut Session,
    root: &Path,
    rel: &str,
    rid: &str,
    hsts: bool,
    precompressed: bool,
) -> pingora_error::Result<u16> {
    let method = session.req_header().method.clone();
    if method != Method::GET && method != Method::HEAD {
        respond::send(session, 405, &[("allow", "GET, HEAD")], rid).await?;
        return Ok(405);
    }
    let Some(path) = resolve(root, rel).await else {
        respond::send(session, 404, &[], rid).await?;
        return Ok(404);
    };
    let path = if path.is_dir() {
        if !rel.is_empty() && !rel.ends_with('/') {
            return redirect_to_dir(session, rid).await;
        }
        match confine(root, &path.join("index.html")).await {
            Some(index) => index,
            None => {
                respond::send(session, 404, &[], rid).await?;
                return Ok(404);
            }
        }
    } else {
        path
    };
    let variant = if precompressed {
        variant(session, root, &path).await
    } else {
        Variant::default()
    };
    let sending = Sending {
        head: method == Method::HEAD,
        rid,
        hsts,
        content_type: content_type(&path),
    };
    let file = variant.file.as_deref().unwrap_or(&path);
    send_file(session, file, &variant, &sending).await
}

/// A compressed file served in place of the one asked for.
#[derive(Debug, Default)]
struct Variant {
    file: Option<PathBuf>,
    encoding: Option<Encoding>,
    /// Some variant exists: the answer depends on Accept-Encoding.
    vary: bool,
}

/// The file extension of each encoding's variant.
fn extension(e: Encoding) -> &'static str {
    match e {
        Encoding::Br => "br",
        Encoding::Zstd => "zst",
        Encoding::Gzip => "gz",
    }
}

/// The best variant of `path` the client accepts, among those that exist (inside `root`).
async fn variant(session: &Session, root: &Path, path: &Path) -> Variant {
    let mut found = Vec::new();
    for e in Encoding::DEFAULT_ORDER {
        let mut name = path.as_os_str().to_owned();
        name.push(".");
        name.push(extension(e));
        if let Some(file) = confine(root, Path::new(&name))
            .await
            .filter(|f| f.is_file())
        {
            found.push((e, file));
        }
    }
    if found.is_empty() {
        return Variant::default();
    }
    let req = session.req_header();
    let choice = Compression::with_defaults(found.iter().map(|(e, _)| *e).collect());
    // A HEAD is answered as its GET would be: nothing is compressed on the way.
    let method = if req.method == Method::HEAD {
        "GET"
    } else {
        req.method.as_str()
    };
    let http10 = req.version < http::Version::HTTP_11;
    let chosen = match compress::asked(Some(&choice), method, http10, &req.headers) {
        Asked::Use(e) => found.into_iter().find(|(f, _)| *f == e),
        _ => None,
    };
    Variant {
        encoding: chosen.as_ref().map(|(e, _)| *e),
        file: chosen.map(|(_, f)| f),
        vary: true,
    }
}

/// What a file is sent with.
struct Sending<'a> {
    head: bool,
    rid: &'a str,
    hsts: bool,
    content_type: String,
}

/// The canonical file for `rel` under `root`, or `None` if it does not exist or escapes.
async fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(rel)
        .decode_utf8()
        .ok()?;
    let mut path = root.to_path_buf();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\0') || s.contains('\\') => return None,
            s => path.push(s),
        }
    }
    confine(root, &path).await
}

/// Canonicalizes `path` (following symlinks) and keeps it only if it stays inside `root`.
async fn confine(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = tokio::fs::canonicalize(path).await.ok()?;
    real.starts_with(root).then_some(real)
}

async fn redirect_to_dir(session: &mut Session, rid: &str) -> pingora_error::Result<u16> {
    let uri = &session.req_header().uri;
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    respond::send(session, 301, &[("location", &location)], rid).await?;
    Ok(301)
}

async fn send_file(
    session: &mut Session,
    path: &Path,
    variant: &Variant,
    sending: &Sending<'_>,
) -> pingora_error::Result<u16> {
    let Sending {
        head, rid, hsts, ..
    } = *sending;
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        respond::send(session, 404, &[], rid).await?;
        return Ok(404);
    };
    let Ok(meta) = file.metadata().await else {
        respond::send(session, 404, &[], rid).await?;
        return Ok(404);
    };
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let etag = etag(meta.len(), modified);
    let last_modified = httpdate::fmt_http_date(modified);
    if not_modified(session, &etag, modified) {
        let mut resp = ResponseHeader::build(304, Some(4))?;
        if variant.vary {
            resp.insert_header("vary", "Accept-Encoding")?;
        }
        resp.insert_header("x-request-id", rid)?;
        if hsts {
            resp.insert_header("strict-transport-security", HSTS)?;
        }
        resp.insert_header("etag", &etag)?;
        resp.insert_header("last-modified", &last_modified)?;
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(304);
    }
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header("x-request-id", rid)?;
    if hsts {
        resp.insert_header("strict-transport-security", HSTS)?;
    }
    resp.insert_header("content-type", &sending.content_type)?;
    if variant.vary {
        resp.insert_header("vary", "Accept-Encoding")?;
    }
    if let Some(e) = variant.encoding {
        resp.insert_header("content-encoding", e.token())?;
    }
    resp.insert_header("content-length", meta.len().to_string())?;
    resp.insert_header("etag", &etag)?;
    resp.insert_header("last-modified", &last_modified)?;
    session
        .write_response_header(Box::new(resp), head || meta.len() == 0)
        .await?;
    if head || meta.len() == 0 {
        return Ok(200);
    }
    let mut left = meta.len();
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let n = file.read(&mut buf).await.map_err(|e| {
            pingora_error::Error::because(
                pingora_error::ErrorType::FileReadError,
                "reading a static file",
                e,
            )
        })?;
        if n == 0 {
            // The file shrank while being sent; the client sees a short body and a closed connection.
            return pingora_error::Error::e_explain(
                pingora_error::ErrorType::FileReadError,
                "static file shrank",
            );
        }
        left = left.saturating_sub(n as u64);
        session
            .write_response_body(Some(Bytes::copy_from_slice(&buf[..n])), left == 0)
            .await?;
    }
    Ok(200)
}

fn etag(len: u64, modified: SystemTime) -> String {
    let since = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "\"{len:x}-{:x}{:08x}\"",
        since.as_secs(),
        since.subsec_nanos()
    )
}

fn not_modified(session: &Session, etag: &str, modified: SystemTime) -> bool {
    let headers = &session.req_header().headers;
    if let Some(inm) = headers.get("if-none-match").and_then(|v| v.to_str().ok()) {
        return inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    }
    let since = headers
        .get("if-modified-since")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match since {
        // HTTP dates have whole seconds.
        Some(since) => {
            modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                <= since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
        }
        None => false,
    }
}

fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    if mime.type_() == mime_guess::mime::TEXT
        || mime.subtype() == mime_guess::mime::JAVASCRIPT
        || mime.subtype() == mime_guess::mime::JSON
    {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}
