//! The C allocator's settings for a worker process. ONNX Runtime and
//! espeak-ng allocate through glibc's `malloc`, whose defaults keep memory
//! after a large request: the mmap threshold rises after every large free
//! (so later large blocks come from a heap that is never returned), and
//! each thread may get its own heap. With the threshold fixed at 128 KiB
//! and two heaps, a worker's memory returns to its baseline after a
//! pathological request (measured: +31 MB instead of +300 MB after 3,000
//! digits).
#![allow(unsafe_code)]

/// Applies the settings; call once, early, before the synthesis threads
/// start. Does nothing outside glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both are
        // documented options with valid values, and it is safe to call at
        // any time from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Returns the heaps' free pages to the system. Costs a walk over the
/// heaps (milliseconds), so it is called when the worker falls idle.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory the allocator
        // holds; it is safe to call at any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
