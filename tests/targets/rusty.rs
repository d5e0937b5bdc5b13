// Test target in Rust, built without forced frame pointers:
// main -> rusty::run -> rusty::Checksummer::digest -> rusty::mix (hot).
// Usage: rusty [seconds]
use std::hint::black_box;
use std::time::{Duration, Instant};

struct Checksummer {
    state: u64,
}

impl Checksummer {
    #[inline(never)]
    fn digest(&mut self, data: &[u64]) -> u64 {
        for &d in data {
            self.state = mix(self.state, d);
        }
        self.state
    }
}

#[inline(never)]
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b;
    for _ in 0..64 {
        x = x.rotate_left(7).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ black_box(b);
    }
    x
}

#[inline(never)]
fn run(seconds: f64) -> u64 {
    let data: Vec<u64> = (0..4096).collect();
    let mut c = Checksummer { state: 1 };
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut out = 0;
    while Instant::now() < end {
        out ^= c.digest(black_box(&data));
    }
    out
}

fn main() {
    let secs = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3600.0);
    println!("{}", run(secs));
}
