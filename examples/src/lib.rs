//! Example programs that embed threeport live in `src/bin/`. This library target exists so the
//! README's code runs as doc tests against every crate it uses.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
