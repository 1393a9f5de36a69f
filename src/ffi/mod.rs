//! The C ABI, declared in `include/specblock.h` (generated from this module by cbindgen).
//!
//! Conventions (also in the README):
//! - every symbol starts with `sb_`; handles are opaque and created / destroyed by the library
//!   (`sb_tree_new` / `sb_tree_free`; `sb_tree_free(NULL)` is a no-op);
//! - every fallible function returns `sb_status` (`SB_STATUS_OK` = 0) and writes its outputs only on
//!   success; `sb_status_str` renders a status as text;
//! - inputs come first, outputs last; a buffer is followed by its capacity in elements;
//! - a `const` handle argument means the call does not modify it;
//! - NULL where a pointer is required gives `SB_STATUS_NULL_ARGUMENT`; `(NULL, 0)` is an empty buffer;
//! - no panic crosses the boundary: a caught panic returns `SB_STATUS_PANIC` (or 0 for getters);
//! - params structs start with `struct_size`; get them from `*_default_params()` and change fields.
//!
//! Typical use: `sb_tree_new` once; per decoding step `sb_tree_reset(root)`, `sb_tree_add` for each
//! candidate, `sb_tree_finalize(budget)`, read the layouts the engine wants, run the target over the tree,
//! then `sb_verify_greedy` or `sb_verify_sample`; `sb_tree_free` at the end.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // every export documents its contract in the header

// The header lists the functions in this order (cbindgen keeps the parse order), one object after the
// other as a newcomer meets them: the draft tree, its layouts for the target, verification, then the
// drafter and its sessions, then online adaptation of the drafter, then the CUDA device path. Blank
// lines keep rustfmt from sorting them.
mod tree;

mod layout;

mod verify;

mod drafter;

mod adapter;

mod cuda;

use core::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use adapter::*;
pub use cuda::*;
pub use drafter::*;
pub use layout::*;
pub use tree::*;
pub use verify::*;

use crate::error::Status;

/// Runs `body`, turning a panic into [`Status::Panic`] and an error into its status.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Status>) -> Status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(s)) => s,
        Err(_) => Status::Panic,
    }
}

/// Runs an infallible getter, returning `default` if it panics.
pub(crate) fn guard_or<T>(default: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(default)
}

impl From<crate::Error> for Status {
    fn from(e: crate::Error) -> Status {
        e.status()
    }
}

/// Borrows `len` elements at `ptr`; `(NULL, 0)` is the empty slice.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable elements that stay valid and unaliased by writes for `'a`.
pub(crate) unsafe fn slice_ref<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], Status> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Status::NullArgument);
    }
    if !ptr.is_aligned()
        || len
            .checked_mul(size_of::<T>())
            .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Status::InvalidArgument);
    }
    // SAFETY: non-NULL, aligned, size fits isize; validity of the memory is the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// Mutably borrows `len` elements at `ptr`; `(NULL, 0)` is the empty slice.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` writable elements, not otherwise accessed during `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], Status> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(Status::NullArgument);
    }
    if !ptr.is_aligned()
        || len
            .checked_mul(size_of::<T>())
            .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Status::InvalidArgument);
    }
    // SAFETY: non-NULL, aligned, size fits isize; validity of the memory is the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// Borrows the object behind a pointer the caller promises is valid or NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to a live, properly aligned `T`.
pub(crate) unsafe fn obj_ref<'a, T>(ptr: *const T) -> Result<&'a T, Status> {
    // SAFETY: caller contract; NULL is rejected by `as_ref`.
    unsafe { ptr.as_ref() }.ok_or(Status::NullArgument)
}

/// Mutable counterpart of [`obj_ref`].
///
/// # Safety
/// A non-NULL `ptr` must point to a live `T` not otherwise accessed during `'a`.
pub(crate) unsafe fn obj_mut<'a, T>(ptr: *mut T) -> Result<&'a mut T, Status> {
    // SAFETY: caller contract; NULL is rejected by `as_mut`.
    unsafe { ptr.as_mut() }.ok_or(Status::NullArgument)
}

/// Reads a versioned params struct whose first field is `uint32_t struct_size`: accepts exactly the size
/// this library knows and copies the struct out. A larger size (a caller built against a newer header)
/// is refused without reading past this library's layout.
///
/// # Safety
/// A non-NULL `ptr` must point to at least `struct_size` readable bytes.
pub(crate) unsafe fn read_params<T: Copy>(ptr: *const T) -> Result<T, Status> {
    // SAFETY: forwarded; a struct of exactly T's size needs no earlier layout.
    unsafe { read_params_from::<T>(ptr, &[], None) }
}

/// [`read_params`] for a struct that grew: `struct_size` may also be one of `earlier_sizes`, the sizes
/// of the earlier published layouts (each a prefix of T); fields past the caller's size keep their
/// values in `defaults`. Any other size is `SB_STATUS_STRUCT_SIZE` (a size between two layouts would
/// cut a field). An earlier layout may have a smaller alignment than T (it may lack T's pointer
/// fields), so it is copied out byte by byte wherever it sits; only `struct_size` itself must be
/// aligned, and a full-size struct must be aligned for T.
///
/// # Safety
/// As [`read_params`].
pub(crate) unsafe fn read_params_from<T: Copy>(
    ptr: *const T,
    earlier_sizes: &[usize],
    defaults: Option<T>,
) -> Result<T, Status> {
    let size_ptr = ptr as *const u32;
    if size_ptr.is_null() {
        return Err(Status::NullArgument);
    }
    if !size_ptr.is_aligned() {
        return Err(Status::InvalidArgument);
    }
    // SAFETY: non-NULL and aligned for the u32 that starts every params struct.
    let size = unsafe { *size_ptr } as usize;
    let full = size_of::<T>();
    if size == full {
        if !ptr.is_aligned() {
            return Err(Status::InvalidArgument);
        }
        // SAFETY: aligned, and the caller declared (through struct_size) that a whole T is there.
        return Ok(unsafe { *ptr });
    }
    let Some(mut out) = defaults.filter(|_| size < full && earlier_sizes.contains(&size)) else {
        return Err(Status::StructSize);
    };
    // SAFETY: `size` < size_of::<T>() bytes are readable at `ptr` (caller contract) and writable at
    // `out`; the caller's struct is a published prefix of T, so the bytes land on whole fields of the
    // same types, and a byte copy needs no alignment.
    unsafe {
        core::ptr::copy_nonoverlapping(ptr as *const u8, &mut out as *mut T as *mut u8, size);
    }
    Ok(out)
}

/// Writes `value` to `out` if it is not NULL.
///
/// # Safety
/// A non-NULL `out` must be valid for writes.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> Result<(), Status> {
    if out.is_null() {
        return Err(Status::NullArgument);
    }
    // SAFETY: non-NULL; validity is the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// A static, NUL-terminated English description of `status`; "unknown status" for values that are not
/// a `sb_status`. The pointer is valid for the life of the program and must not be freed.
#[unsafe(no_mangle)]
pub extern "C" fn sb_status_str(status: i32) -> *const c_char {
    let text = match Status::from_code(status as i64) {
        Some(s) => s.message_with_nul(),
        None => "unknown status\0",
    };
    text.as_ptr() as *const c_char
}

/// The library version as a static NUL-terminated string, e.g. "0.1.0". Compare with `SB_VERSION`.
#[unsafe(no_mangle)]
pub extern "C" fn sb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
