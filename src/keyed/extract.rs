//! Key extractors: which breaker guards a request. Closures over `&Req`, and ready-made
//! extractors for `http::Request`: [`Authority`], [`PathPrefix`], [`Header`], [`Extension`].

use std::{borrow::Cow, fmt, hash::Hash, marker::PhantomData};

use http::{HeaderName, Request};

/// Picks the key of a request: the breaker that guards it.
///
/// Closures `Fn(&Req) -> K` are extractors (their key is owned). An extractor may instead
/// borrow its key from the request (`Key = str`, returning `Cow::Borrowed`), so that the hot
/// path allocates nothing for keys already in the registry; the ready-made HTTP extractors do.
pub trait ExtractKey<Req> {
    /// The key, as looked up; the registry stores `<Key as ToOwned>::Owned` (`String` for
    /// `str`).
    type Key: ?Sized + Hash + Eq + ToOwned;

    /// The key of `req`.
    fn extract<'a>(&'a self, req: &'a Req) -> Cow<'a, Self::Key>;
}

impl<F, Req, K> ExtractKey<Req> for F
where
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone,
{
    type Key = K;

    #[inline]
    fn extract<'a>(&'a self, req: &'a Req) -> Cow<'a, K> {
        Cow::Owned(self(req))
    }
}

/// The key used when a request has none (no authority, no such header): `"unknown"`.
pub const UNKNOWN: &str = "unknown";

/// Keys requests by their URI's authority (`host[:port]`), falling back to the `Host`
/// header, then to [`UNKNOWN`]. ASCII case is folded (an allocation only when the authority
/// has upper-case letters), so `API.openai.com` and `api.openai.com` share a breaker.
///
/// Credentials never enter the key: the userinfo of `https://user:pass@host/` (everything up
/// to the last `@`, in the URI or in a malformed `Host` header) is dropped, so no breaker
/// name, [`CircuitOpen`](crate::CircuitOpen) message, log line, metric label or Redis message
/// built from the key can carry them.
///
/// ```
/// use tower_breaker::keyed::{Authority, ExtractKey};
/// let req = http::Request::get("https://API.openai.com/v1/chat/completions").body(()).unwrap();
/// assert_eq!(Authority::new().extract(&req), "api.openai.com");
/// let req = http::Request::get("https://alice:s3cr3t@api.example.com:8443/").body(()).unwrap();
/// assert_eq!(Authority::new().extract(&req), "api.example.com:8443");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Authority {
    fallback: &'static str,
}

impl Authority {
    /// The extractor, with [`UNKNOWN`] as the fallback key.
    pub const fn new() -> Self {
        Self { fallback: UNKNOWN }
    }

    /// Uses `key` for requests with neither an authority nor a `Host` header.
    pub const fn fallback(mut self, key: &'static str) -> Self {
        self.fallback = key;
        self
    }
}

fn fold_case(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// `host[:port]` of an authority: what follows its last `@` (userinfo cannot hold one
/// unescaped).
fn without_userinfo(authority: &str) -> &str {
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

impl<B> ExtractKey<Request<B>> for Authority {
    type Key = str;

    #[inline]
    fn extract<'a>(&'a self, req: &'a Request<B>) -> Cow<'a, str> {
        let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        match authority.map(without_userinfo) {
            Some(a) if !a.is_empty() => fold_case(a),
            _ => Cow::Borrowed(self.fallback),
        }
    }
}

/// Keys requests by the first `segments` segments of their path: with 2, `/v1/chat/completions`
/// and `/v1/chat/completions?x=1` both key as `/v1/chat`, `/v1/embeddings` as
/// `/v1/embeddings`, and `/` as `/`. Borrowed from the request: no allocation.
///
/// ```
/// use tower_breaker::keyed::{ExtractKey, PathPrefix};
/// let req = http::Request::get("https://api.openai.com/v1/chat/completions").body(()).unwrap();
/// assert_eq!(PathPrefix::new(2).extract(&req), "/v1/chat");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PathPrefix {
    segments: usize,
}

impl PathPrefix {
    /// Keys by the first `segments` path segments.
    pub const fn new(segments: usize) -> Self {
        Self { segments }
    }
}

impl<B> ExtractKey<Request<B>> for PathPrefix {
    type Key = str;

    #[inline]
    fn extract<'a>(&'a self, req: &'a Request<B>) -> Cow<'a, str> {
        if self.segments == 0 {
            return Cow::Borrowed("/");
        }
        let path = req.uri().path();
        let cut = path
            .match_indices('/')
            .nth(self.segments)
            .map_or(path.len(), |(i, _)| i);
        match path[..cut].trim_end_matches('/') {
            "" => Cow::Borrowed("/"),
            key => Cow::Borrowed(key),
        }
    }
}

/// Keys requests by a header's value, e.g. a model name (`x-model: gpt-4o`), falling back to
/// [`UNKNOWN`] when the header is missing or not visible ASCII. Borrowed from the request.
///
/// ```
/// use tower_breaker::keyed::{ExtractKey, Header};
/// let req = http::Request::post("/v1/chat/completions").header("x-model", "gpt-4o").body(()).unwrap();
/// assert_eq!(Header::new("x-model").extract(&req), "gpt-4o");
/// ```
#[derive(Clone, Debug)]
pub struct Header {
    name: HeaderName,
    fallback: &'static str,
}

impl Header {
    /// Keys by the header `name`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name; it is meant to be a literal. Use
    /// [`from_name`](Self::from_name) with a parsed [`HeaderName`] otherwise.
    pub fn new(name: &'static str) -> Self {
        Self::from_name(HeaderName::from_static(name))
    }

    /// Keys by the header `name`.
    pub const fn from_name(name: HeaderName) -> Self {
        Self {
            name,
            fallback: UNKNOWN,
        }
    }

    /// Uses `key` for requests without the header.
    pub const fn fallback(mut self, key: &'static str) -> Self {
        self.fallback = key;
        self
    }
}

impl<B> ExtractKey<Request<B>> for Header {
    type Key = str;

    #[inline]
    fn extract<'a>(&'a self, req: &'a Request<B>) -> Cow<'a, str> {
        match req.headers().get(&self.name).and_then(|v| v.to_str().ok()) {
            Some(v) if !v.is_empty() => Cow::Borrowed(v),
            _ => Cow::Borrowed(self.fallback),
        }
    }
}

/// Keys requests by a value of type `T` in their extensions, which the code building the
/// request put there: e.g. the model of an LLM call, known to the code that wrote the JSON
/// body, where no header carries it. The key is `T`'s string form ([`AsRef<str>`]), borrowed
/// from the request (no allocation for a known key), so the registry is a
/// `KeyedRegistry<String>`; requests without the extension (or with an empty one) key as
/// [`UNKNOWN`].
///
/// Give the value a type of its own (a newtype over `String`): extensions are a map by type.
/// See [the module docs](super#keys-from-the-request-body-per-model-breakers) for a model read
/// from a JSON body with `map_request`.
///
/// ```
/// use tower_breaker::keyed::{ExtractKey, Extension};
///
/// #[derive(Clone)]
/// struct Model(String);
/// impl AsRef<str> for Model {
///     fn as_ref(&self) -> &str {
///         &self.0
///     }
/// }
///
/// let req = http::Request::post("/v1/chat/completions")
///     .extension(Model("gpt-4o".into()))
///     .body(r#"{"model":"gpt-4o","messages":[]}"#)
///     .unwrap();
/// assert_eq!(Extension::<Model>::new().extract(&req), "gpt-4o");
/// ```
pub struct Extension<T> {
    fallback: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> Extension<T> {
    /// Keys by the extension of type `T`.
    pub const fn new() -> Self {
        Self {
            fallback: UNKNOWN,
            _type: PhantomData,
        }
    }

    /// Uses `key` for requests without the extension.
    pub const fn fallback(mut self, key: &'static str) -> Self {
        self.fallback = key;
        self
    }
}

impl<T> Default for Extension<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Extension<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Extension<T> {}

impl<T> fmt::Debug for Extension<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extension")
            .field("type", &std::any::type_name::<T>())
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<B, T> ExtractKey<Request<B>> for Extension<T>
where
    T: AsRef<str> + Send + Sync + 'static,
{
    type Key = str;

    #[inline]
    fn extract<'a>(&'a self, req: &'a Request<B>) -> Cow<'a, str> {
        match req.extensions().get::<T>().map(AsRef::as_ref) {
            Some(key) if !key.is_empty() => Cow::Borrowed(key),
            _ => Cow::Borrowed(self.fallback),
        }
    }
}
