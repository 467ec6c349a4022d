//! HTTPS and mutual TLS, with the typed client: a client certificate signed by the client CA
//! authenticates; without one, a bearer token is needed; an untrusted server is refused.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use threeport_api::model::{AwsAccount, AwsCredentials};
use threeport_api::{Client, ClientError, ListParams};
use threeport_core::{MemoryBus, MemoryStore};
use threeport_server::auth::mint_token;
use threeport_server::tls::{TlsFiles, serve_tls, server_config};
use threeport_server::{ApiState, Ops, TokenSet, app, model};

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    /// A client certificate and key, concatenated.
    client_identity: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = ca("threeport test CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["controller".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_identity: format!("{}{}", client.pem(), client_key.serialize_pem()),
    }
}

#[tokio::test]
async fn client_certificates_or_tokens_authenticate_over_https() {
    let pki = pki();
    let minted = mint_token().unwrap();
    let mut tokens = TokenSet::new();
    tokens.add_hash(&minted.hash).unwrap();
    let app = app(
        ApiState {
            store: Arc::new(MemoryStore::new()),
            bus: Arc::new(MemoryBus::new()),
            locker: Arc::new(threeport_core::MemoryLocker::new()),
            kinds: Arc::new(model::registry()),

            sealer: Arc::new(threeport_server::Sealer::ephemeral().unwrap()),
        },
        Some(Arc::new(tokens)),
        Ops::default(),
    );
    let config = server_config(&TlsFiles {
        cert_pem: pki.server_cert.clone().into_bytes(),
        key_pem: pki.server_key.clone().into_bytes(),
        client_ca_pem: Some(pki.ca.clone().into_bytes()),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve_tls(
        listener,
        config,
        app,
        stop.clone().cancelled_owned(),
    ));

    let account = AwsAccount {
        account_id: "123456789012".into(),
        default_region: "us-east-1".into(),
        default_account: true,
        credentials: AwsCredentials::AccessKeys {
            access_key_id: "AKIA".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
        },
    };
    // A client certificate is enough.
    let certified = Client::builder(&url)
        .ca_pem(pki.ca.as_bytes())
        .identity_pem(pki.client_identity.as_bytes())
        .build()
        .unwrap();
    certified
        .api::<AwsAccount>()
        .create("main", &account)
        .await
        .unwrap();
    // Without one, TLS alone is not: a token is needed.
    let anonymous = Client::builder(&url)
        .ca_pem(pki.ca.as_bytes())
        .build()
        .unwrap();
    let listed = anonymous
        .api::<AwsAccount>()
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(listed, Err(ClientError::Unauthorized { .. })),
        "{listed:?}"
    );
    let with_token = Client::builder(&url)
        .ca_pem(pki.ca.as_bytes())
        .token(&minted.token)
        .build()
        .unwrap();
    let all = with_token
        .api::<AwsAccount>()
        .list_all(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    // A certificate from another CA does not authenticate; a server the client does not
    // trust is refused.
    let stranger = ca("someone else");
    let key = KeyPair::generate().unwrap();
    let foreign = CertificateParams::new(vec!["intruder".to_owned()])
        .unwrap()
        .signed_by(&key, &stranger)
        .unwrap();
    let intruder = Client::builder(&url)
        .ca_pem(pki.ca.as_bytes())
        .identity_pem(format!("{}{}", foreign.pem(), key.serialize_pem()).into_bytes())
        .build()
        .unwrap();
    assert!(
        intruder
            .api::<AwsAccount>()
            .list(&ListParams::default())
            .await
            .is_err()
    );
    let untrusting = Client::builder(&url)
        .ca_pem(stranger.pem().into_bytes())
        .token(&minted.token)
        .build()
        .unwrap();
    assert!(matches!(
        untrusting
            .api::<AwsAccount>()
            .list(&ListParams::default())
            .await,
        Err(ClientError::Unavailable { .. })
    ));

    stop.cancel();
    server.await.unwrap();
}

#[test]
fn bad_tls_files_are_reported_naming_the_setting() {
    let pki = pki();
    let err = server_config(&TlsFiles {
        cert_pem: b"not a certificate".to_vec(),
        key_pem: pki.server_key.into_bytes(),
        client_ca_pem: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("tls_cert"), "{err}");
    let err = server_config(&TlsFiles {
        cert_pem: pki.server_cert.into_bytes(),
        key_pem: b"no key".to_vec(),
        client_ca_pem: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("tls_key"), "{err}");
}
