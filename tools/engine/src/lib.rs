//! Reference Llama engine for specblock: loads SmolLM2-135M-Instruct (GGUF or a Hugging Face directory),
//! tokenizes with its byte-level BPE and chat template, and runs plain decoding and tree verification on
//! the CPU. It is a client of the `specblock` library and uses only its public API.
#![deny(missing_docs)]

pub mod bench;
pub mod datagen;
pub mod decode;
pub mod error;
pub mod evaluate;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod load;
pub mod model;
pub mod quant;
pub mod safetensors;
pub mod speculate;
pub mod tokenizer;
pub mod trace;
pub mod weights;

pub use error::{Error, Result};
