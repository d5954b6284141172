//! Route lookup does not allocate: a counting global allocator watches this thread
//! while requests are routed on the bench configuration.
#![allow(unsafe_code)] // `GlobalAlloc` is an unsafe trait; this file only counts calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use http::HeaderMap;
use isthmus_benches::{get, request_host, routing_snapshot, BENCH_SHAPE};

struct Counting;

thread_local! {
    /// `Some(n)`: counting on this thread, `n` allocations so far.
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn bump() {
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.replace(None)).unwrap_or(0)
}

#[test]
fn route_lookup_does_not_allocate() {
    let snap = routing_snapshot(BENCH_SHAPE);
    let router = &snap.listener(80).expect("port 80").router;
    let headers = HeaderMap::new();
    let wildcard = request_host(9);
    let cases = [
        ("host-0.example.com", "/api/0/x", true),
        ("HOST-500.Example.COM:80", "/last/x", true),
        (wildcard.as_str(), "/re/123/2", true),
        ("host-1.example.com", "/exact/1?q=1", true),
        ("host-500.example.com", "/nothing", false),
        ("unknown.example.org", "/", false),
    ];
    for (authority, path, hit) in cases {
        let req = get(authority, path, &headers);
        // Warm up (the regex engine keeps a per-thread cache after first use).
        assert_eq!(router.route(&req).is_some(), hit, "{authority}{path}");
        let n = allocations(|| {
            black_box(router.route(black_box(&req)));
        });
        assert_eq!(n, 0, "{authority}{path} allocated {n} times");
    }
    // The counter itself works.
    assert!(allocations(|| drop(black_box(vec![1u8; 16]))) > 0);
}
