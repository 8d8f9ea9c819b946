//! The contract's failpoints. With the cargo feature `failpoints`, `failpoint!("signup.after_user")`
//! consults the `fail` crate (configured from the `FAILPOINTS` environment variable at start) and
//! either returns an internal error from the enclosing function or panics there. Without the
//! feature the macro expands to nothing, so a normal build contains none of this code.

#[cfg(feature = "failpoints")]
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |_| Err($crate::error::ApiError::Internal(
            anyhow::anyhow!(concat!("failpoint ", $name, " triggered"))
        )))
    };
}

#[cfg(not(feature = "failpoints"))]
macro_rules! failpoint {
    ($name:literal) => {};
}

pub(crate) use failpoint;
