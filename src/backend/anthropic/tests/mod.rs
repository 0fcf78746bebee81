//! The request translation and the stream translation, each through the module's API.

mod request;
mod stream;
