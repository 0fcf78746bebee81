//! Tests of the request translation and the stream translation, one file each.

mod request;
mod stream;
