//! The contract's failpoints. With the cargo feature `failpoints`, `failpoint!("signup.after_user")`
//! consults the `fail` crate (configured from the `FAILPOINTS` environment variable at start) and,
//! as configured, returns an error from the enclosing function (`return`: an internal `ApiError`
//! in a handler, a `sqlx::Error` inside a store flow, which rolls the transaction back), panics
//! there (`panic`), or waits there without blocking the runtime (`return(sleep:MS)`: how the tests
//! hold a flow at a point, to race another flow into that window or to hang up on it; the `fail`
//! crate's own `sleep(MS)` blocks a runtime thread, which would starve the very request that is
//! meant to race it).
//! Without the feature the macro expands to nothing, so a normal build contains none of this code.

/// The error a failpoint's `return` action produces, in whichever error type the enclosing
/// function returns.
#[derive(Debug)]
pub struct Triggered(pub &'static str);

impl From<Triggered> for crate::error::ApiError {
    fn from(t: Triggered) -> Self {
        crate::error::ApiError::Internal(anyhow::anyhow!("failpoint {} triggered", t.0))
    }
}

impl From<Triggered> for sqlx::Error {
    fn from(t: Triggered) -> Self {
        sqlx::Error::Protocol(format!("failpoint {} triggered", t.0))
    }
}

#[cfg(feature = "failpoints")]
macro_rules! failpoint {
    ($name:literal) => {
        match fail::eval($name, |arg| arg) {
            None => {}
            Some(arg) => match $crate::failpoint::wait_of(arg.as_deref()) {
                Some(wait) => {
                    tracing::info!(failpoint = %$name, "failpoint holding the flow");
                    tokio::time::sleep(wait).await
                }
                None => return Err($crate::failpoint::Triggered($name).into()),
            },
        }
    };
}

/// The wait of a `return(sleep:MS)` action.
#[cfg(feature = "failpoints")]
pub fn wait_of(arg: Option<&str>) -> Option<std::time::Duration> {
    let ms = arg?.strip_prefix("sleep:")?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

#[cfg(not(feature = "failpoints"))]
macro_rules! failpoint {
    ($name:literal) => {};
}

pub(crate) use failpoint;
