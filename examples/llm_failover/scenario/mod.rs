//! The scenario of `examples/llm_failover`, shared with `tests/showcase.rs` so that the test
//! runs exactly the code the example runs.
//!
//! - [`Sim`]: a simulated OpenAI-compatible provider, a real hyper server on `127.0.0.1:0`
//!   answering `POST /v1/chat/completions` with a latency, a context window, a content filter
//!   and scripted faults over phases of the run (500s, Anthropic's 529 `overloaded_error`,
//!   OpenAI's 429 `insufficient_quota`, 429s with `Retry-After`), each with the provider's real
//!   error body and headers.
//! - [`build_stack`]: the client stack: one hyper-util client (over [`https_connector`], http
//!   or https by the URL's scheme); per provider a breaker classified by `LlmClassifier` over
//!   a timeout over `LlmErrorLayer` over the provider's client; a [`Failover`] over the
//!   providers routed by `LlmRouting` (by the kind of failure each provider reports).
//! - [`run`]: drives requests (a mix of short prompts, long ones and ones a content filter
//!   refuses) at a steady rate with bounded concurrency and a per-request deadline, reports
//!   progress, and returns a [`Summary`].

#![allow(dead_code)]

mod client;
mod drive;
mod load;
mod sim;
mod summary;

pub use client::*;
pub use drive::*;
pub use load::*;
pub use sim::*;
pub use summary::*;
