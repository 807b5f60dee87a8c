//! AWS errors mapped into heroku2rds error kinds, once, with a message that names the IAM action
//! that failed and says what to do.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::error::SdkError;

use crate::error::{Cause, Error, Kind};

/// Where the operator's policy lives, for messages.
pub const POLICY_HINT: &str = "policies/operator.json lists every action heroku2rds needs";

/// Maps an SDK error of the call `action` (an IAM action name such as `ec2:RunInstances`).
pub fn sdk<E>(action: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mapped = match &e {
        SdkError::ServiceError(se) => {
            // An answer without a parsable code: judge by the HTTP status (a 403 is a refusal
            // whatever the body looks like).
            let code = match (se.err().code(), se.raw().status().as_u16()) {
                (Some(c), _) => c,
                (None, 403) => "AccessDenied",
                (None, 429) => "Throttling",
                (None, s) if s >= 500 => "InternalError",
                (None, _) => "Unknown",
            };
            classify(action, code, se.err().message().unwrap_or(""))
        }
        SdkError::TimeoutError(_) => Error::other(format!("AWS did not answer {action} in time"))
            .with_cause(Cause::AwsUnreachable)
            .with_fix("check the network connection to AWS, then re-run")
            .transient(),
        SdkError::DispatchFailure(_) if !mentions_credentials(&e) => {
            Error::other(format!("cannot reach AWS for {action}"))
                .with_cause(Cause::AwsUnreachable)
                .with_fix(
                    "check the network connection, the region, and AWS_ENDPOINT_URL if you set one",
                )
                .transient()
        }
        _ if mentions_credentials(&e) => Error::new(
            Kind::Refused,
            format!("no usable AWS credentials for {action}"),
        )
        .with_cause(Cause::AwsCredentials)
        .with_fix(
            "configure credentials as for the AWS CLI (AWS_PROFILE, `aws configure`, `aws sso login`, \
             or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), then re-run",
        ),
        _ => Error::other(format!("the AWS call {action} failed")),
    };
    mapped.with_source(e)
}

/// The error code of an SDK error, when AWS answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// The SDK reports missing credentials as an error of `aws-credential-types`, a crate this one
/// does not depend on, so the chain's text is read here, once; the result is recorded as
/// [`Cause::AwsCredentials`].
fn mentions_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = format!("{err:?}");
        if text.contains("CredentialsNotLoaded") || text.contains("no credentials") {
            return true;
        }
        cur = err.source();
    }
    false
}

const CREDENTIALS_FIX: &str = "check AWS_PROFILE / AWS_ACCESS_KEY_ID and refresh expired session \
     credentials (e.g. `aws sso login`), then re-run";

/// Pure classification of an AWS error code (unit-tested below).
pub fn classify(action: &str, code: &str, message: &str) -> Error {
    let detail = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    let denied = matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "AuthorizationError"
            | "UnauthorizedAccess"
            | "Forbidden"
            | "AllAccessDisabled"
    );
    // GetCallerIdentity needs no permission (not even an explicit deny stops it): refused, it
    // means the credentials themselves were not accepted.
    let credentials = denied && action == "sts:GetCallerIdentity";
    let cause = Cause::Aws {
        code: code.to_string(),
    };
    let mapped = match code {
        _ if denied && !credentials => Error::new(
            Kind::Refused,
            format!("AWS denied {action} to these credentials ({code})"),
        )
        .with_fix(format!(
            "grant {action} to the IAM user or role heroku2rds runs as ({POLICY_HINT}), then re-run: \
             it continues where it stopped"
        )),
        _ if credentials => Error::new(
            Kind::Refused,
            format!("AWS rejected the credentials on {action} ({code})"),
        )
        .with_fix(CREDENTIALS_FIX),
        "InvalidClientTokenId" | "SignatureDoesNotMatch" | "ExpiredToken" | "ExpiredTokenException"
        | "UnrecognizedClientException" | "AuthFailure" | "InvalidAccessKeyId"
        | "InvalidToken" => Error::new(
            Kind::Refused,
            format!("AWS rejected the credentials on {action} ({code})"),
        )
        .with_fix(CREDENTIALS_FIX),
        "OptInRequired" | "UnsupportedRegion" | "InvalidRegion" => Error::new(
            Kind::Refused,
            format!("the region refused {action} ({detail})"),
        )
        .with_fix("enable the region for the account, or choose another with --region"),
        c if is_quota(c) => Error::new(
            Kind::Refused,
            format!("an AWS quota stopped {action} ({detail})"),
        )
        .with_fix(
            "request a higher quota in the Service Quotas console, or choose a smaller instance \
             type or another region, then re-run",
        ),
        c if is_throttle(c) => Error::other(format!("AWS throttled or failed {action} ({detail})"))
            .with_fix("wait a minute and re-run: provisioning continues where it stopped")
            .transient(),
        _ => Error::other(format!("AWS refused {action} ({detail})"))
            .with_fix("re-run to continue where it stopped; the message above says what AWS objected to"),
    };
    mapped.with_cause(cause)
}

fn is_quota(code: &str) -> bool {
    code.ends_with("LimitExceeded") && code != "RequestLimitExceeded"
        || code.ends_with("QuotaExceeded")
        || code.ends_with("QuotaExceededFault")
        || matches!(
            code,
            "TooManyBuckets" | "InsufficientInstanceCapacity" | "InsufficientDBInstanceCapacity"
        )
}

fn is_throttle(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "RequestThrottled"
            | "ServiceUnavailable"
            | "InternalError"
            | "InternalFailure"
            | "Unavailable"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(&str, Kind, bool, &str)] = &[
            (
                "AccessDenied",
                Kind::Refused,
                false,
                "grant rds:CreateDBInstance",
            ),
            (
                "UnauthorizedOperation",
                Kind::Refused,
                false,
                "grant rds:CreateDBInstance",
            ),
            (
                "AccessDeniedException",
                Kind::Refused,
                false,
                "grant rds:CreateDBInstance",
            ),
            ("InvalidClientTokenId", Kind::Refused, false, "AWS_PROFILE"),
            ("ExpiredToken", Kind::Refused, false, "sso login"),
            ("AuthFailure", Kind::Refused, false, "AWS_ACCESS_KEY_ID"),
            ("InstanceLimitExceeded", Kind::Refused, false, "quota"),
            ("VcpuLimitExceeded", Kind::Refused, false, "quota"),
            ("DBInstanceQuotaExceeded", Kind::Refused, false, "quota"),
            ("StorageQuotaExceeded", Kind::Refused, false, "quota"),
            ("TooManyBuckets", Kind::Refused, false, "quota"),
            ("RequestLimitExceeded", Kind::Other, true, "wait a minute"),
            ("Throttling", Kind::Other, true, "wait a minute"),
            ("SlowDown", Kind::Other, true, "wait a minute"),
            ("InvalidParameterValue", Kind::Other, false, "re-run"),
            ("OptInRequired", Kind::Refused, false, "--region"),
        ];
        // GetCallerIdentity cannot be denied by a policy: a refusal is about the credentials.
        let e = classify("sts:GetCallerIdentity", "AccessDenied", "");
        assert_eq!(e.kind(), Kind::Refused);
        assert!(
            e.message().contains("rejected the credentials"),
            "{}",
            e.message()
        );
        assert!(e.fix().unwrap().contains("AWS_ACCESS_KEY_ID"));
        for (code, kind, transient, fix) in cases {
            let e = classify("rds:CreateDBInstance", code, "some message");
            assert_eq!(e.kind(), *kind, "{code}");
            assert_eq!(e.is_transient(), *transient, "{code}");
            assert!(e.fix().unwrap().contains(fix), "{code}: {:?}", e.fix());
            assert_eq!(
                e.cause(),
                &Cause::Aws {
                    code: code.to_string()
                },
                "{code}"
            );
            assert!(e.message().contains("rds:CreateDBInstance"), "{code}");
        }
    }
}
