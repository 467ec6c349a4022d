//! The Python exceptions, and how Rust errors become them.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use threeport_api::ClientError;
use threeport_core::{Error, ErrorKind};

pyo3::create_exception!(
    threeport,
    ThreeportError,
    PyException,
    "Base of every error threeport raises."
);
pyo3::create_exception!(
    threeport,
    NotFound,
    ThreeportError,
    "The object (or what it refers to) does not exist."
);
pyo3::create_exception!(
    threeport,
    Conflict,
    ThreeportError,
    "A concurrent change, a name taken, or an object still in use."
);
pyo3::create_exception!(
    threeport,
    ValidationError,
    ThreeportError,
    "Bad input; `field` names the culprit."
);
pyo3::create_exception!(
    threeport,
    Unauthorized,
    ThreeportError,
    "No valid token or client certificate."
);
pyo3::create_exception!(
    threeport,
    Unavailable,
    ThreeportError,
    "The control plane or a backend cannot answer now; try again."
);
pyo3::create_exception!(
    threeport,
    ServerError,
    ThreeportError,
    "The server failed in an unexpected way."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ThreeportError", py.get_type::<ThreeportError>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("ValidationError", py.get_type::<ValidationError>())?;
    m.add("Unauthorized", py.get_type::<Unauthorized>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    Ok(())
}

/// A `ValidationError` whose `field` attribute names the culprit.
pub(crate) fn validation(field: impl Into<String>, message: impl Into<String>) -> PyErr {
    let (field, message) = (field.into(), message.into());
    let text = if message.contains(&field) {
        message.clone()
    } else {
        format!("{field}: {message}")
    };
    let err = ValidationError::new_err(text);
    Python::attach(|py| {
        let value = err.value(py);
        let _ = value.setattr("field", field);
        let _ = value.setattr("reason", message);
    });
    err
}

/// A client error as the Python exception that says what went wrong.
pub(crate) fn client_error(err: ClientError) -> PyErr {
    match err {
        ClientError::NotFound { message } => NotFound::new_err(message),
        ClientError::Conflict { message } => Conflict::new_err(message),
        ClientError::Invalid { field, message } => validation(field, message),
        ClientError::Unauthorized { message } => Unauthorized::new_err(message),
        ClientError::Unavailable { message } => Unavailable::new_err(message),
        ClientError::Server { status, message } => ServerError::new_err(match status {
            Some(status) => format!("HTTP {status}: {message}"),
            None => message,
        }),
        other => ServerError::new_err(other.to_string()),
    }
}

/// An engine (store, bus) error as the Python exception that says what went wrong.
pub(crate) fn core_error(err: Error) -> PyErr {
    let message = err.to_string();
    match (err.kind(), err) {
        (_, Error::Invalid { field, message }) => validation(field, message),
        (ErrorKind::NotFound, _) => NotFound::new_err(message),
        (ErrorKind::Conflict | ErrorKind::AlreadyExists, _) => Conflict::new_err(message),
        (ErrorKind::Unavailable, _) => Unavailable::new_err(message),
        _ => ServerError::new_err(message),
    }
}

/// JSON that cannot be read, as a `ValidationError` naming `field`.
pub(crate) fn json_error(field: &str, err: serde_json::Error) -> PyErr {
    validation(field.to_owned(), format!("not valid JSON: {err}"))
}
