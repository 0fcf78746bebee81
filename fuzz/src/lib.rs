//! The fuzz targets' calls into the agent: `harness` feeds each input to the
//! agent's own parsers, taken from the usepod-edge library (a path dependency),
//! so what is fuzzed is exactly the code the agent runs.

pub mod harness;
