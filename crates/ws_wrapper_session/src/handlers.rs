//! Typed handlers by channel and name, with the protocol's rejections for a
//! missing one, and the conversions between Rust values and the wire's
//! arguments, answers and Error objects. Shared by both drivers; no I/O.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use ws_wrapper_codec::{DEFAULT_REJECT_MESSAGE, error_value};

/// An Error object as it travels (`{"message": ...}`, `"_": 1`): what a
/// handler answers with, what a peer rejected with.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerError {
    /// The Error's `message`.
    pub message: String,
    /// The whole value as the peer sees it or sent it (`{"message": ...}` at
    /// least when it is an Error).
    pub value: Value,
}

impl PeerError {
    /// An Error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        PeerError {
            value: error_value(&message),
            message,
        }
    }

    /// The rejection value a peer sent: its `message`, the string itself, or
    /// the JSON text; `null` is the default Error (`"Error"`).
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Null => PeerError::new(DEFAULT_REJECT_MESSAGE),
            Value::String(s) => PeerError {
                message: s.clone(),
                value: Value::String(s),
            },
            value => {
                let message = value
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_string);
                PeerError { message, value }
            }
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}

impl From<&str> for PeerError {
    fn from(message: &str) -> Self {
        PeerError::new(message)
    }
}

impl From<String> for PeerError {
    fn from(message: String) -> Self {
        PeerError::new(message)
    }
}

/// What a request handler answers with: a value, or an anonymous channel
/// (`Ch`, the driver's channel type) whose handle is the request id.
#[derive(Debug)]
pub enum Reply<Ch> {
    /// A value (`{"i","d"}`).
    Value(Value),
    /// An anonymous channel (`{"i","h":1}`).
    Channel(Ch),
}

impl<Ch> Reply<Ch> {
    /// A value reply from anything serializable; a value that does not
    /// serialize is an error reply saying so.
    pub fn value(v: impl Serialize) -> Result<Self, PeerError> {
        serde_json::to_value(v)
            .map(Reply::Value)
            .map_err(|e| PeerError::new(format!("unserializable result: {e}")))
    }
}

/// Anything a handler may answer with: a serializable value or a [`Reply`].
pub trait IntoReply<Ch>: Send + 'static {
    /// The reply; a value that does not serialize is an error reply with
    /// its message (never a silent `null`).
    fn into_reply(self) -> Result<Reply<Ch>, PeerError>;
}

impl<Ch, T: Serialize + Send + 'static> IntoReply<Ch> for T {
    fn into_reply(self) -> Result<Reply<Ch>, PeerError> {
        Reply::value(self)
    }
}

impl<Ch: Send + 'static> IntoReply<Ch> for Reply<Ch> {
    fn into_reply(self) -> Result<Reply<Ch>, PeerError> {
        Ok(self)
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A type-erased handler: a context `C` and the wire's arguments in, a
/// reply (value or channel `Ch`) or an error out.
pub type Handler<C, Ch> =
    Arc<dyn Fn(C, Vec<Value>) -> BoxFuture<Result<Reply<Ch>, PeerError>> + Send + Sync>;

/// Arguments as the wire's array: a tuple or sequence is the array, `()`
/// none, anything else one argument.
///
/// # Errors
///
/// A value that does not serialize, with serde's message.
pub fn to_args(args: impl Serialize) -> Result<Vec<Value>, String> {
    match serde_json::to_value(args) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(v) => Ok(vec![v]),
        Err(e) => Err(format!("arguments do not serialize: {e}")),
    }
}

/// The wire's arguments as `A`: a tuple reads the array, `()` reads none.
///
/// # Errors
///
/// `invalid arguments: ...`, as the handler's rejection.
pub fn from_args<A: DeserializeOwned>(args: Vec<Value>) -> Result<A, PeerError> {
    let empty = args.is_empty();
    serde_json::from_value(Value::Array(args))
        .or_else(|e| {
            if empty {
                serde_json::from_value(Value::Null)
            } else {
                Err(e)
            }
        })
        .map_err(|e| PeerError::new(format!("invalid arguments: {e}")))
}

/// The arguments a typed handler takes: anything deserializable from the
/// wire's arguments array (a tuple, `()`, a `Vec<Value>`).
pub trait Args: DeserializeOwned + Send + 'static {}

impl<A: DeserializeOwned + Send + 'static> Args for A {}

/// What a typed handler returns: a future of `Result<T, E>` where `T` is a
/// reply ([`IntoReply`]: a serializable value or a [`Reply`]) and `E` an Error.
pub trait HandlerFuture<Ch>:
    Future<Output = Result<Self::Value, Self::Error>> + Send + 'static
{
    /// The answer.
    type Value: IntoReply<Ch>;
    /// The error, sent as an Error object.
    type Error: Into<PeerError> + 'static;
}

impl<Ch, F, T, E> HandlerFuture<Ch> for F
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: IntoReply<Ch>,
    E: Into<PeerError> + 'static,
{
    type Value = T;
    type Error = E;
}

/// Wraps a typed handler `f(ctx, args) -> Result<T, E>`: the arguments
/// array becomes `A` (a tuple), `T` a reply ([`IntoReply`]), `E` an Error.
pub fn handler<C: 'static, Ch: Send + 'static, A: Args, Fut: HandlerFuture<Ch>>(
    f: impl Fn(C, A) -> Fut + Send + Sync + 'static,
) -> Handler<C, Ch> {
    Arc::new(move |ctx, args| match from_args::<A>(args) {
        Ok(a) => {
            let fut = f(ctx, a);
            Box::pin(async move {
                match fut.await {
                    Ok(v) => v.into_reply(),
                    Err(e) => Err(e.into()),
                }
            })
        }
        Err(e) => Box::pin(std::future::ready(Err(e))),
    })
}

/// Handlers by channel (`None`: the main channel) and name.
pub struct Handlers<H> {
    by_channel: HashMap<Option<String>, HashMap<String, H>>,
}

impl<H> Default for Handlers<H> {
    fn default() -> Self {
        Handlers {
            by_channel: HashMap::new(),
        }
    }
}

impl<H> fmt::Debug for Handlers<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("channels", &self.by_channel.len())
            .finish()
    }
}

impl<H: Clone> Handlers<H> {
    /// Adds (or replaces) the handler of `name` on `channel`.
    pub fn add(&mut self, channel: Option<&str>, name: &str, h: H) {
        self.by_channel
            .entry(channel.map(str::to_string))
            .or_default()
            .insert(name.to_string(), h);
    }

    /// Makes named channel `channel` exist, with no handler yet: a request
    /// on it is then "No event listener ... on channel", not "does not exist".
    pub fn add_channel(&mut self, channel: &str) {
        self.by_channel
            .entry(Some(channel.to_string()))
            .or_default();
    }

    /// Whether named channel `channel` exists.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.by_channel.contains_key(&Some(channel.to_string()))
    }

    fn find(&self, channel: Option<&str>, name: &str) -> Option<H> {
        self.by_channel
            .get(&channel.map(str::to_string))?
            .get(name)
            .cloned()
    }

    /// The handler of `name` on `channel` in the first of `tables` that has
    /// one (a connection's own handlers before the server's), or the
    /// rejection the JavaScript library answers with: `Channel '<c>' does
    /// not exist` when no table has the named channel, else `No event
    /// listener for '<name>'` (`... on channel '<c>'` on a named channel).
    ///
    /// # Errors
    ///
    /// That rejection.
    pub fn lookup(
        tables: &[&Handlers<H>],
        channel: Option<&str>,
        name: &str,
    ) -> Result<H, PeerError> {
        if let Some(h) = tables.iter().find_map(|t| t.find(channel, name)) {
            return Ok(h);
        }
        Err(PeerError::new(match channel {
            Some(c) if !tables.iter().any(|t| t.has_channel(c)) => {
                format!("Channel '{c}' does not exist")
            }
            Some(c) => format!("No event listener for '{name}' on channel '{c}'"),
            None => format!("No event listener for '{name}'"),
        }))
    }
}
