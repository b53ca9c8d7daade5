//! Why a request could not be answered by its upstream, and everything that follows from it,
//! decided once for both engines: the status the client gets, whether the request goes again
//! (and where), and whether the failure counts against the server (passive ejection).

use std::net::SocketAddr;

use pingora_error::{Error, ErrorSource, ErrorType};

/// The status logged for a request whose client left before its response was complete.
pub const CLIENT_CLOSED: u16 = 499;

/// Why an exchange with an upstream (or the client's side of it) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("upstream closed or reset before responding")]
    Reset,
    /// The server said it did not process the request: an HTTP/2 stream past its GOAWAY, or
    /// reset with REFUSED_STREAM (RFC 9113, 8.7). It may go again whatever its method.
    #[error("upstream refused the stream unprocessed (HTTP/2 GOAWAY or REFUSED_STREAM)")]
    Refused,
    #[error("upstream read timed out")]
    Timeout,
    #[error("upstream write timed out")]
    WriteTimeout,
    #[error("bad upstream response: {0}")]
    BadResponse(String),
    #[error("upstream ended the response early")]
    Truncated,
    #[error("client timed out")]
    ClientTimeout,
    #[error("client went away: {0}")]
    ClientGone(&'static str),
    #[error("malformed request: {0}")]
    ClientBad(String),
    /// A decision of rproxy's own that answers with this status (e.g. 413 mid-body).
    #[error("{1}")]
    Status(u16, String),
}

impl Failure {
    /// The status the client gets when nothing has been sent to it yet; 0 = none (it is gone).
    pub fn status(&self) -> u16 {
        match self {
            Failure::Connect(_)
            | Failure::Reset
            | Failure::Refused
            | Failure::BadResponse(_)
            | Failure::Truncated => 502,
            Failure::ConnectTimeout | Failure::Timeout | Failure::WriteTimeout => 504,
            Failure::ClientTimeout => 408,
            Failure::ClientGone(_) => 0,
            Failure::ClientBad(_) => 400,
            Failure::Status(code, _) => *code,
        }
    }

    /// The status the access log and metrics record for a request that ended with this
    /// failure, after `written` (0: nothing) reached the client: a client that left before its
    /// response was complete is 499, nginx's "client closed request", whatever was sent.
    pub fn logged_status(&self, written: u16) -> u16 {
        match self {
            Failure::ClientGone(_) => CLIENT_CLOSED,
            _ if written != 0 => written,
            _ => self.status(),
        }
    }

    /// Did the client end the exchange (left, stalled or sent something malformed)? Such
    /// failures are the client's, not worth a warning about the upstream.
    pub fn is_clients(&self) -> bool {
        matches!(
            self,
            Failure::ClientGone(_) | Failure::ClientTimeout | Failure::ClientBad(_)
        )
    }

    /// Nothing reached the server: the request may go elsewhere whatever its method.
    fn before_sending(&self) -> bool {
        matches!(self, Failure::Connect(_) | Failure::ConnectTimeout)
    }

    /// Did the server say it never processed the request? Then any method may be replayed.
    pub fn unprocessed(&self) -> bool {
        matches!(self, Failure::Refused)
    }

    /// May the request go again? Before anything was sent, always; after a reset or a refusal
    /// with no response byte, when it can be replayed (idempotent or `unprocessed`, body held
    /// whole). A slow server is never sent the same request again, nor is a bad answer asked
    /// for twice.
    pub fn retryable(&self, replayable: bool) -> bool {
        self.before_sending() || (replayable && matches!(self, Failure::Reset | Failure::Refused))
    }

    /// Does this count toward the server's passive ejection? Failures of the server itself
    /// (refused, reset, too slow), never on a pooled connection it may have closed while idle.
    pub fn counts_against_server(&self, reused: bool) -> bool {
        !reused
            && matches!(
                self,
                Failure::Connect(_)
                    | Failure::ConnectTimeout
                    | Failure::Reset
                    | Failure::Timeout
                    | Failure::WriteTimeout
            )
    }

    /// The same failure, told by pingora's proxy.
    pub fn from_pingora(e: &Error) -> Failure {
        use ErrorType::*;
        if e.esource() == &ErrorSource::Upstream && refused_by_h2(e) {
            return Failure::Refused;
        }
        let why = || e.to_string();
        match (e.etype(), e.esource()) {
            (HTTPStatus(code), _) => Failure::Status(*code, why()),
            (ConnectTimedout, _) => Failure::ConnectTimeout,
            (
                ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure | BindError
                | SocketError,
                _,
            ) => Failure::Connect(why()),
            (ReadTimedout, ErrorSource::Upstream) => Failure::Timeout,
            (WriteTimedout, ErrorSource::Upstream) => Failure::WriteTimeout,
            (InvalidHTTPHeader | H1Error | H2Error | InvalidH2, ErrorSource::Upstream) => {
                Failure::BadResponse(why())
            }
            (_, ErrorSource::Upstream) => Failure::Reset,
            (ReadTimedout, ErrorSource::Downstream) => Failure::ClientTimeout,
            // pingora's HTTP/2 server tells a stream the client reset, or a connection it
            // closed, as an H2Error (malformed streams are refused before they get here).
            (H2Error, ErrorSource::Downstream) => Failure::ClientGone("stream reset or closed"),
            (
                WriteError | ReadError | ConnectionClosed | WriteTimedout,
                ErrorSource::Downstream,
            ) => Failure::ClientGone("connection closed"),
            (_, ErrorSource::Downstream) => Failure::ClientBad(why()),
            _ => Failure::Status(500, why()),
        }
    }
}

/// An HTTP/2 stream the upstream refused before processing it: reset with REFUSED_STREAM,
/// or past the last stream a GOAWAY(NO_ERROR) kept (a GOAWAY with an error code fails the
/// streams it kept too, so those may have been processed).
fn refused_by_h2(e: &Error) -> bool {
    let Some(h2) = e.root_cause().downcast_ref::<h2::Error>() else {
        return false;
    };
    match h2.reason() {
        Some(h2::Reason::REFUSED_STREAM) => true,
        Some(h2::Reason::NO_ERROR) => h2.is_go_away() && h2.is_remote(),
        _ => false,
    }
}

/// What comes after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The same server, on a new connection (the pooled one was stale).
    Again,
    /// Another server of the pool, one not tried yet.
    Elsewhere,
    /// Answer the client with the failure.
    Stop,
}

/// The attempts of one request: its retry budget and the servers it has tried.
#[derive(Debug, Default)]
pub struct Attempts {
    left: u32,
    tried: Vec<SocketAddr>,
}

impl Attempts {
    pub fn new(retries: u32) -> Attempts {
        Attempts {
            left: retries,
            tried: Vec::new(),
        }
    }

    /// Servers that failed this request (not to be picked again).
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// Decides what follows `failure` on `server` (`reused`: on a pooled connection).
    pub fn after(
        &mut self,
        failure: &Failure,
        server: SocketAddr,
        replayable: bool,
        reused: bool,
    ) -> Next {
        if !failure.retryable(replayable) || self.left == 0 {
            return Next::Stop;
        }
        self.left -= 1;
        if reused {
            return Next::Again;
        }
        self.tried.push(server);
        Next::Elsewhere
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn statuses() {
        assert_eq!(Failure::Connect("refused".into()).status(), 502);
        assert_eq!(Failure::Reset.status(), 502);
        assert_eq!(Failure::Timeout.status(), 504);
        assert_eq!(Failure::ConnectTimeout.status(), 504);
        assert_eq!(Failure::ClientTimeout.status(), 408);
        assert_eq!(Failure::ClientGone("x").status(), 0);
        assert_eq!(Failure::Status(413, "big".into()).status(), 413);
    }

    #[test]
    fn a_client_that_left_is_logged_499_whatever_was_sent() {
        assert_eq!(Failure::ClientGone("x").logged_status(0), 499);
        assert_eq!(Failure::ClientGone("x").logged_status(200), 499);
        assert_eq!(Failure::Reset.logged_status(0), 502);
        assert_eq!(Failure::Truncated.logged_status(200), 200);
        assert!(Failure::ClientGone("x").is_clients());
        assert!(!Failure::Timeout.is_clients());
    }

    #[test]
    fn retry_policy() {
        let mut a = Attempts::new(2);
        let refused = Failure::Connect("refused".into());
        assert_eq!(a.after(&refused, addr(1), false, false), Next::Elsewhere);
        assert_eq!(a.tried(), &[addr(1)]);
        assert_eq!(a.after(&Failure::Reset, addr(2), false, false), Next::Stop);
        assert_eq!(a.after(&Failure::Reset, addr(2), true, true), Next::Again);
        assert_eq!(
            a.after(&refused, addr(2), true, false),
            Next::Stop,
            "budget spent"
        );
        let mut a = Attempts::new(5);
        assert_eq!(a.after(&Failure::Timeout, addr(1), true, false), Next::Stop);
        let bad = Failure::BadResponse("x".into());
        assert_eq!(a.after(&bad, addr(1), true, false), Next::Stop);
    }

    #[test]
    fn refused_streams_go_again_when_their_body_is_whole() {
        let mut a = Attempts::new(1);
        assert!(Failure::Refused.unprocessed());
        assert_eq!(a.after(&Failure::Refused, addr(1), false, true), Next::Stop);
        assert_eq!(a.after(&Failure::Refused, addr(1), true, true), Next::Again);
        assert!(!Failure::Refused.counts_against_server(false));
        let refused = || {
            let reset = h2::Error::from(h2::Reason::REFUSED_STREAM);
            Error::because(ErrorType::H2Error, "while reading h2 header", reset)
        };
        let mut up = refused();
        up.as_up();
        assert!(matches!(Failure::from_pingora(&up), Failure::Refused));
        let mut down = refused();
        down.as_down();
        assert!(!matches!(Failure::from_pingora(&down), Failure::Refused));
    }

    #[test]
    fn ejection_counts_server_failures_on_new_connections() {
        assert!(Failure::Timeout.counts_against_server(false));
        assert!(Failure::Reset.counts_against_server(false));
        assert!(!Failure::Reset.counts_against_server(true));
        assert!(!Failure::BadResponse("x".into()).counts_against_server(false));
        assert!(!Failure::ClientTimeout.counts_against_server(false));
    }

    #[test]
    fn pingora_errors() {
        let status = |e: Box<Error>| Failure::from_pingora(&e).status();
        assert_eq!(status(Error::new_up(ErrorType::ConnectRefused)), 502);
        assert_eq!(status(Error::new_up(ErrorType::ReadTimedout)), 504);
        assert_eq!(status(Error::new_down(ErrorType::ReadTimedout)), 408);
        assert_eq!(status(Error::new_down(ErrorType::ConnectionClosed)), 0);
        let reset = Failure::from_pingora(&Error::new_down(ErrorType::H2Error));
        assert_eq!(reset.logged_status(200), 499);
        assert_eq!(status(Error::new_down(ErrorType::InvalidHTTPHeader)), 400);
        assert_eq!(status(Error::new_in(ErrorType::HTTPStatus(413))), 413);
    }
}
