//! Errors and the status codes they map to across the C ABI.

use core::fmt;

/// Status code returned by every fallible C function (`sb_status` in C); `SB_STATUS_OK` is 0.
///
/// Values are stable: a retired value is never reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument is out of its documented range (for example a negative token, temperature < 0,
    /// top_p outside (0, 1], vocab 0).
    InvalidArgument = 2,
    /// A fixed capacity would be exceeded (node arena full, budget above capacity, too many sequences).
    Capacity = 3,
    /// A caller-provided output buffer is smaller than required; nothing was written.
    BufferTooSmall = 4,
    /// A node id does not name an existing node.
    InvalidNode = 5,
    /// The tree would grow deeper than its `max_depth`.
    DepthLimit = 6,
    /// The call is not valid in the object's current state (for example adding after finalize,
    /// reading layouts before finalize).
    InvalidState = 7,
    /// A NaN or infinite value where a finite one is required (logits, log-probabilities).
    NonFinite = 8,
    /// A token id is outside the vocabulary.
    TokenOutOfRange = 9,
    /// Array sizes disagree (for example `n` is not the tree length).
    ShapeMismatch = 10,
    /// A params struct carries a `struct_size` this library does not understand.
    StructSize = 11,
    /// Memory could not be allocated at creation.
    OutOfMemory = 12,
    /// A panic was caught at the C boundary; this is a bug in specblock, please report it.
    Panic = 13,
    /// No GPU can be used: the library was built without the `cuda` feature, no CUDA driver is
    /// installed, or the driver sees no device.
    NoDevice = 14,
    /// A CUDA driver or cuBLAS call failed (a launch error, out of device memory, an illegal address).
    DeviceError = 15,
}

impl Status {
    /// Every status, in numeric order.
    pub fn all() -> &'static [Status] {
        &ALL_STATUSES
    }

    /// A short English description, NUL-terminated so the C ABI can hand it out as is.
    pub const fn message_with_nul(self) -> &'static str {
        match self {
            Status::Ok => "ok\0",
            Status::NullArgument => "a required pointer argument was NULL\0",
            Status::InvalidArgument => "an argument is out of its documented range\0",
            Status::Capacity => "a fixed capacity would be exceeded\0",
            Status::BufferTooSmall => "an output buffer is too small; nothing was written\0",
            Status::InvalidNode => "a node id does not name an existing node\0",
            Status::DepthLimit => "the tree would exceed its maximum depth\0",
            Status::InvalidState => "the call is not valid in the object's current state\0",
            Status::NonFinite => "a NaN or infinite value where a finite one is required\0",
            Status::TokenOutOfRange => "a token id is outside the vocabulary\0",
            Status::ShapeMismatch => "array sizes disagree\0",
            Status::StructSize => "unsupported struct_size in a params struct\0",
            Status::OutOfMemory => "out of memory at creation\0",
            Status::Panic => "internal panic caught at the C boundary (a specblock bug)\0",
            Status::NoDevice => "no usable GPU (no cuda feature, no CUDA driver, or no device)\0",
            Status::DeviceError => "a CUDA driver or cuBLAS call failed\0",
        }
    }

    /// The description without the trailing NUL.
    pub fn message(self) -> &'static str {
        let s = self.message_with_nul();
        &s[..s.len() - 1]
    }

    /// The status with numeric value `code`, if there is one.
    pub fn from_code(code: i64) -> Option<Status> {
        ALL_STATUSES.iter().copied().find(|s| *s as i64 == code)
    }
}

const ALL_STATUSES: [Status; 16] = [
    Status::Ok,
    Status::NullArgument,
    Status::InvalidArgument,
    Status::Capacity,
    Status::BufferTooSmall,
    Status::InvalidNode,
    Status::DepthLimit,
    Status::InvalidState,
    Status::NonFinite,
    Status::TokenOutOfRange,
    Status::ShapeMismatch,
    Status::StructSize,
    Status::OutOfMemory,
    Status::Panic,
    Status::NoDevice,
    Status::DeviceError,
];

/// A detailed error from the Rust API. [`Error::status`] gives the C status code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Error {
    /// An argument is out of range; the text names the argument and the rule.
    InvalidArgument(&'static str),
    /// A fixed capacity would be exceeded.
    Capacity {
        /// What ran out (for example "tree nodes").
        what: &'static str,
        /// The capacity fixed at creation.
        capacity: usize,
    },
    /// An output buffer is too small.
    BufferTooSmall {
        /// Which output.
        what: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        got: usize,
    },
    /// A node id does not exist.
    InvalidNode {
        /// The id given.
        node: i64,
        /// Number of nodes that exist (ids are `0..len`).
        len: usize,
    },
    /// Adding under `parent` would exceed `max_depth`.
    DepthLimit {
        /// The tree's maximum depth.
        max_depth: usize,
    },
    /// The call is not valid now; the text says why.
    InvalidState(&'static str),
    /// A non-finite value where a finite one is required.
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Row (or node) of the bad value.
        row: usize,
        /// Column of the bad value (0 for scalars).
        col: usize,
    },
    /// A token id outside `0..vocab`.
    TokenOutOfRange {
        /// Which input holds it.
        what: &'static str,
        /// The token.
        token: i64,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Array sizes disagree.
    ShapeMismatch {
        /// Which input.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// Allocation at creation failed.
    OutOfMemory,
    /// No usable GPU; the text says why (no `cuda` feature, no driver, no device).
    NoDevice(&'static str),
    /// A CUDA driver or cuBLAS call failed.
    Device {
        /// The call that failed (for example "cuLaunchKernel").
        call: &'static str,
        /// The CUDA or cuBLAS status code it returned.
        code: u32,
    },
}

impl Error {
    /// The C status code for this error.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::Capacity { .. } => Status::Capacity,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::InvalidNode { .. } => Status::InvalidNode,
            Error::DepthLimit { .. } => Status::DepthLimit,
            Error::InvalidState(_) => Status::InvalidState,
            Error::NonFinite { .. } => Status::NonFinite,
            Error::TokenOutOfRange { .. } => Status::TokenOutOfRange,
            Error::ShapeMismatch { .. } => Status::ShapeMismatch,
            Error::OutOfMemory => Status::OutOfMemory,
            Error::NoDevice(_) => Status::NoDevice,
            Error::Device { .. } => Status::DeviceError,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::Capacity { what, capacity } => {
                write!(f, "capacity exceeded: {what} is limited to {capacity}")
            }
            Error::BufferTooSmall { what, needed, got } => {
                write!(
                    f,
                    "buffer too small for {what}: need {needed} elements, got {got}"
                )
            }
            Error::InvalidNode { node, len } => {
                write!(f, "node {node} does not exist (valid ids are 0..{len})")
            }
            Error::DepthLimit { max_depth } => {
                write!(f, "the tree would exceed its maximum depth of {max_depth}")
            }
            Error::InvalidState(why) => write!(f, "invalid state: {why}"),
            Error::NonFinite { what, row, col } => {
                write!(f, "non-finite value in {what} at row {row}, column {col}")
            }
            Error::TokenOutOfRange { what, token, vocab } => {
                write!(
                    f,
                    "token {token} in {what} is outside the vocabulary of {vocab}"
                )
            }
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "shape mismatch for {what}: expected {expected}, got {got}"
            ),
            Error::OutOfMemory => write!(f, "out of memory while creating a structure"),
            Error::NoDevice(why) => write!(f, "no usable GPU: {why}"),
            Error::Device { call, code } => write!(f, "CUDA call {call} failed with status {code}"),
        }
    }
}

impl core::error::Error for Error {}

/// Checks that an output buffer holds at least `needed` elements.
pub(crate) fn check_buffer(what: &'static str, needed: usize, got: usize) -> Result<(), Error> {
    if got < needed {
        Err(Error::BufferTooSmall { what, needed, got })
    } else {
        Ok(())
    }
}
