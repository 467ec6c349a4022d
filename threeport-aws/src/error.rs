//! Sorting SDK errors by what a controller should do about them.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::error::SdkError;
use threeport_core::Error;

/// Codes that mean the request can never succeed as it is.
const REFUSED: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "AuthFailure",
    "InvalidBucketName",
    "IllegalLocationConstraintException",
    "InvalidLocationConstraint",
    "InvalidParameterException",
    "InvalidRequestException",
    "ValidationException",
    "MalformedPolicy",
    "LimitExceededException",
    "TooManyBuckets",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidParameterValueException",
    "UnauthorizedOperation",
    "OptInRequired",
    "VpcLimitExceeded",
    "SubnetLimitExceeded",
    "InternetGatewayLimitExceeded",
    "MalformedPolicyDocument",
    "LimitExceeded",
    "UnsupportedAvailabilityZoneException",
    "ResourceLimitExceededException",
    "StorageQuotaExceeded",
    "InstanceQuotaExceeded",
    "DBInstanceQuotaExceeded",
    "InvalidDBInstanceState",
    "InvalidVPCNetworkStateFault",
    "ExpiredToken",
];

/// Codes that mean "try again later".
const TRANSIENT: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServerException",
    "TooManyRequestsException",
    "RequestThrottled",
    "DependencyViolation",
    "ResourceInUseException",
];

/// Maps an SDK error: refusals are `Invalid` (field `what`), missing resources `NotFound`,
/// throttling, 5xx and connection trouble `Unavailable`.
pub(crate) fn sdk_error<E>(what: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let message = err
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{err}"));
    match (&err, code.as_deref()) {
        (SdkError::ServiceError(_), Some(code)) if REFUSED.contains(&code) => {
            Error::invalid(what, format!("AWS refused: {code}: {message}"))
        }
        (SdkError::ServiceError(_), Some(code)) if TRANSIENT.contains(&code) => {
            Error::unavailable(format!("{what}: {code}: {message}"))
        }
        (SdkError::ServiceError(_), Some(code))
            if code.starts_with("NoSuch")
                || code == "ResourceNotFoundException"
                || code == "NotFound" =>
        {
            Error::not_found(what, message)
        }
        (SdkError::ServiceError(service), _) => {
            let status = service.raw().status().as_u16();
            if status == 401 || status == 403 {
                // HEAD answers carry no error code: the status says it.
                Error::invalid(what, format!("AWS refused: access denied (HTTP {status})"))
            } else if status >= 500 {
                Error::unavailable(format!("{what}: HTTP {status}: {message}"))
            } else {
                Error::backend(format!("{what}: {}: {message}", code.unwrap_or_default()))
            }
        }
        _ => Error::unavailable(format!("{what}: {message}")),
    }
}
