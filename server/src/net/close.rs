//! WebSocket close codes (SPEC §2), in one enum.

/// WebSocket close codes (SPEC §2). The stock y-websocket client reconnects
/// on every code except 4400–4499, so final refusals use that range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the server is shutting down, or the peer stopped answering pings.
    GoingAway,
    /// 1011: an internal error; the client reconnects and resyncs.
    InternalError,
    /// 1013: room or server full, rate limited, or too slow to keep up.
    TryAgainLater,
    /// 4400: a malformed message.
    Malformed,
    /// 4401: the token expired or was revoked.
    Unauthorized,
    /// 4404: the document was deleted.
    Deleted,
    /// 4413: a message or document too large.
    TooLarge,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Malformed => 4400,
            CloseCode::Unauthorized => 4401,
            CloseCode::Deleted => 4404,
            CloseCode::TooLarge => 4413,
        }
    }
}
