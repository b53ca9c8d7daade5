//! Route lookup on the per-request hot path: exact, wildcard and host-less routes, with 10 and
//! 1,000 routes.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rproxy::routing::{Route, RouteTable, Target};

fn table(n: usize) -> RouteTable {
    let mut t = RouteTable::default();
    for i in 0..n {
        let target = Target::Static(PathBuf::from("."));
        let host = format!("host{i}.example.com");
        t.insert(
            Some(&host),
            Arc::new(Route::new(
                format!("r{i}"),
                &format!("/api/v{}", i % 7),
                target,
            )),
        );
    }
    t.insert(
        Some("*.wild.example.com"),
        Arc::new(Route::new(
            "wild".into(),
            "/",
            Target::Static(PathBuf::from(".")),
        )),
    );
    t.insert(
        None,
        Arc::new(Route::new(
            "any".into(),
            "/static",
            Target::Static(PathBuf::from(".")),
        )),
    );
    t.finish();
    t
}

fn lookups(c: &mut Criterion) {
    for n in [10, 1000] {
        let t = table(n);
        c.bench_function(&format!("lookup exact ({n} routes)"), |b| {
            b.iter(|| {
                t.lookup(
                    black_box("host7.example.com"),
                    black_box("/api/v0/users/42"),
                )
            })
        });
        c.bench_function(&format!("lookup wildcard ({n} routes)"), |b| {
            b.iter(|| t.lookup(black_box("a.wild.example.com:8443"), black_box("/x")))
        });
        c.bench_function(&format!("lookup any-host prefix ({n} routes)"), |b| {
            b.iter(|| t.lookup(black_box("other.org"), black_box("/static/app.css")))
        });
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
