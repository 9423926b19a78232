//! The document store on an S3-compatible bucket: a real moto server on
//! loopback, countersign's store (and then countersign itself) pointed at it
//! with `documents.url = "s3://…"`. The bucket is inspected with plain
//! HTTP requests of our own, not through the store under test.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::eventually;
use common::moto::Moto;
use countersign::config::Settings;
use countersign::documents::{DocumentError, DocumentStore, Staged};
use countersign::ids::{AccountId, EnvelopeId};
use countersign::sandbox::connect::{ConnectFormat, ConnectSender, NotificationOptions, RetryPolicy};
use countersign::sandbox::{Envelope, Fault, RunningSandbox, Sandbox, SandboxConfig, pdf};
use countersign::store::{AttemptOutcome, EnvelopeStatus, Store};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);
const PREFIX: &str = "countersign/test";

/// S3 on a moto of the test's own, inspected with plain HTTP requests.
struct S3 {
    moto: Moto,
    http: reqwest::Client,
}

impl S3 {
    async fn start() -> Self {
        Self { moto: Moto::start().await, http: reqwest::Client::new() }
    }

    async fn create_bucket(&self, bucket: &str) {
        let response = self.http.put(format!("{}/{bucket}", self.moto.endpoint())).send().await.unwrap();
        assert!(response.status().is_success(), "creating bucket {bucket}: {}", response.status());
    }

    /// Every object in `bucket` as (key, size), from a ListObjectsV2 request.
    async fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let url = format!("{}/{bucket}?list-type=2", self.moto.endpoint());
        let xml = self.http.get(url).send().await.unwrap().text().await.unwrap();
        assert!(!xml.contains("<IsTruncated>true"), "the tests keep buckets small");
        let field = |text: &str, name: &str| -> String {
            let start = text.find(&format!("<{name}>")).unwrap() + name.len() + 2;
            let end = text.find(&format!("</{name}>")).unwrap();
            quick_xml::escape::unescape(&text[start..end]).unwrap().into_owned()
        };
        xml.split("<Contents>").skip(1).map(|c| (field(c, "Key"), field(c, "Size").parse().unwrap())).collect()
    }

    /// Multipart uploads started but neither completed nor aborted.
    async fn open_multipart_uploads(&self, bucket: &str) -> usize {
        let url = format!("{}/{bucket}?uploads", self.moto.endpoint());
        let xml = self.http.get(url).send().await.unwrap().text().await.unwrap();
        xml.matches("<UploadId>").count()
    }

    /// The bytes of one object, fetched by its exact key with a client of
    /// the test's own (moto serves objects only to signed requests).
    async fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let client = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.moto.endpoint())
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let location = object_store::path::Path::parse(key).unwrap();
        client.get(&location).await.unwrap().bytes().await.unwrap().to_vec()
    }
}

/// The `[documents]` table for `bucket` on `s3`, staging in `staging`.
fn documents_toml(s3: &S3, bucket: &str, staging: &Path) -> String {
    format!(
        "[documents]\nurl = \"s3://{bucket}/{PREFIX}/\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\n\
         s3_access_key_id = \"testing\"\ns3_secret_access_key = \"testing\"\ns3_allow_http = true\n\
         staging_dir = \"{}\"\n",
        s3.moto.endpoint(),
        staging.display()
    )
}

/// A bucket on a fresh moto, and the document store on it.
struct Bucket {
    s3: S3,
    name: &'static str,
    store: DocumentStore,
    staging: tempfile::TempDir,
}

async fn bucket() -> Bucket {
    let s3 = S3::start().await;
    let name = "signed-documents";
    s3.create_bucket(name).await;
    let staging = tempfile::tempdir().unwrap();
    let settings = Settings::from_toml(&documents_toml(&s3, name, staging.path())).unwrap();
    let store = DocumentStore::open(&settings.documents).unwrap();
    Bucket { s3, name, store, staging }
}

impl Bucket {
    fn staged_files(&self) -> Vec<String> {
        std::fs::read_dir(self.staging.path()).unwrap().map(|e| e.unwrap().file_name().display().to_string()).collect()
    }
}

fn ids() -> (AccountId, EnvelopeId) {
    (
        AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
        EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap(),
    )
}

/// Bytes that differ at every offset that matters (no two parts alike).
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8).collect()
}

/// Streams `bytes` into a staged upload, as a download does.
async fn stage(store: &DocumentStore, bytes: &[u8]) -> Staged {
    let mut upload = store.upload().await.unwrap();
    for chunk in bytes.chunks(64 * 1024) {
        upload.write(chunk).await.unwrap();
    }
    upload.finish().await.unwrap()
}

async fn read_back(store: &DocumentStore, key: &str) -> (u64, Vec<u8>) {
    let document = store.read(key).await.unwrap();
    let chunks: Vec<Bytes> = document.body.try_collect().await.unwrap();
    (document.size, chunks.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_document_is_stored_under_its_key_whole_and_reads_back_identical() {
    let bucket = bucket().await;
    let (account, envelope) = ids();
    // One PUT below the part size; a multipart upload of three parts above it.
    for (name, len) in [("Certificate.pdf", 14), ("Combined.pdf", 12 * 1024 * 1024 + 3)] {
        let bytes = body(len);
        let staged = stage(&bucket.store, &bytes).await;
        assert_eq!((staged.size, staged.sha256.clone()), (len as u64, hex::encode(Sha256::digest(&bytes))));

        let key = bucket.store.publish(&staged.key, account, envelope, name).await.unwrap();
        assert_eq!(key, format!("{account}/{envelope}/{name}"));
        let object = format!("{PREFIX}/{key}");
        assert!(bucket.s3.objects(bucket.name).await.contains(&(object.clone(), len as u64)), "{object} in bucket");
        assert!(bucket.s3.object(bucket.name, &object).await == bytes, "the object holds exactly the bytes");

        let (size, read) = read_back(&bucket.store, &key).await;
        assert_eq!(size, len as u64);
        assert_eq!(hex::encode(Sha256::digest(&read)), staged.sha256, "read back byte-identical");
    }
    assert!(bucket.staged_files().is_empty(), "published files leave staging: {:?}", bucket.staged_files());
    assert_eq!(bucket.s3.open_multipart_uploads(bucket.name).await, 0);
    let missing = format!("{account}/{envelope}/Missing.pdf");
    assert!(matches!(bucket.store.read(&missing).await, Err(DocumentError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_is_not_complete_never_becomes_an_object() {
    let bucket = bucket().await;
    let (account, envelope) = ids();

    // A download that breaks off: the upload is dropped unfinished.
    let mut upload = bucket.store.upload().await.unwrap();
    upload.write(&body(100_000)).await.unwrap();
    drop(upload);
    assert!(bucket.staged_files().is_empty(), "{:?}", bucket.staged_files());

    // A publish cut off halfway through its multipart upload.
    let staged = stage(&bucket.store, &body(64 * 1024 * 1024)).await;
    let store = bucket.store.clone();
    let publishing = tokio::spawn(async move { store.publish(&staged.key, account, envelope, "Big.pdf").await });
    eventually(WAIT, "the multipart upload to start", || async {
        (bucket.s3.open_multipart_uploads(bucket.name).await > 0).then_some(())
    })
    .await;
    publishing.abort();
    assert!(publishing.await.unwrap_err().is_cancelled(), "the publish was cut off before it completed");

    assert_eq!(bucket.s3.objects(bucket.name).await, Vec::new(), "no object, not even a partial one");
    eventually(WAIT, "the cut-off upload to be aborted", || async {
        (bucket.s3.open_multipart_uploads(bucket.name).await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_file_name_stays_one_key_component() {
    let bucket = bucket().await;
    let (account, envelope) = ids();
    let names = [
        ("../../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a/b/c.pdf", "c.pdf"),
        ("Offer #1: 100% & «final»?.pdf", "Offer #1_ 100% & «final»_.pdf"),
        ("  ..hidden.pdf", "hidden.pdf"),
        ("line\nbreak.pdf", "line_break.pdf"),
    ];
    for (name, kept) in names {
        let staged = stage(&bucket.store, name.as_bytes()).await;
        let key = bucket.store.publish(&staged.key, account, envelope, name).await.unwrap();
        assert_eq!(key, format!("{account}/{envelope}/{kept}"), "{name:?}");
        assert_eq!(read_back(&bucket.store, &key).await.1, name.as_bytes());
    }
    let mut objects: Vec<String> = bucket.s3.objects(bucket.name).await.into_iter().map(|(key, _)| key).collect();
    objects.sort();
    let mut expected: Vec<String> =
        names.iter().map(|(_, kept)| format!("{PREFIX}/{account}/{envelope}/{kept}")).collect();
    expected.sort();
    assert_eq!(objects, expected, "every object directly under the envelope, nothing anywhere else");
    for key in ["../x", "/etc/passwd", "a//b", ".incoming/x.part"] {
        assert!(matches!(bucket.store.read(key).await, Err(DocumentError::BadKey(_))), "{key:?}");
    }
}

/// countersign serving on loopback with its documents in a bucket.
struct S3App {
    base_url: String,
    store: Arc<dyn Store>,
    documents: DocumentStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: common::TestStore,
}

impl S3App {
    async fn spawn(toml: &str) -> Self {
        let db = common::sqlite().await;
        let settings = Settings::from_toml(&format!("[store]\nurl = \"{}\"\n{toml}", db.url)).unwrap();
        let service = countersign::service::Service::build(settings).await.unwrap();
        let (store, documents) = (service.store.clone(), service.documents.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run(listener, async {
            let _ = stopped.await;
        }));
        Self { base_url, store, documents, stop: Some(stop), task: Some(task), _db: db }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    async fn wait_processed(&self, envelope: &Envelope) {
        let id = envelope.envelope_id;
        eventually(WAIT, &format!("envelope {id} processed"), || async {
            let record = self.store.envelope(id).await.unwrap()?;
            (record.status == EnvelopeStatus::Processed).then_some(())
        })
        .await;
    }
}

impl Drop for S3App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `[connect]`, `[docusign]` and `[queue]` tables for `sandbox`. Reconciliation is off: its first pass would
/// find the test's envelopes itself and race the notifications the test sends.
fn pipeline_toml(sandbox: &RunningSandbox) -> String {
    format!(
        "{}{}[queue]\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\n[reconcile]\nenabled = false\n",
        common::docusign::connect_toml(sandbox),
        common::docusign::docusign_toml(sandbox, "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_and_downloads_store_their_documents_in_the_bucket() {
    let s3 = S3::start().await;
    s3.create_bucket("countersign").await;
    let staging = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(SandboxConfig { document_bytes: 40_000, ..SandboxConfig::default() })
        .unwrap()
        .serve("127.0.0.1:0")
        .await
        .unwrap();
    sandbox.sandbox.grant_consent(sandbox.sandbox.identity().user.user_id, &["signature", "impersonation"]);
    let toml = format!("{}{}", documents_toml(&s3, "countersign", staging.path()), pipeline_toml(&sandbox));
    let app = S3App::spawn(&toml).await;
    let sender = ConnectSender::new(
        format!("{}/docusign/connect", app.base_url),
        sandbox.sandbox.identity().hmac_keys.clone(),
        RetryPolicy { max_retries: 0, interval: Duration::from_millis(100), timeout: Duration::from_secs(30) },
    );
    let envelopes = sandbox.sandbox.complete_envelopes(2);
    let (embedded, downloaded) = (&envelopes[0], &envelopes[1]);

    // Carried in the notification: stored in the bucket before the 200.
    let with_documents = NotificationOptions { include_documents: true, ..NotificationOptions::default() };
    let report = sender.send(embedded, ConnectFormat::Json, &with_documents).await;
    assert!(report.delivered, "{:?} {:?}", report.last_status, report.last_error);

    // Downloaded by the job; the first downloads arrive truncated.
    sandbox.sandbox.set_fault("combined", Fault { truncate_rate: 1.0, ..Fault::default() });
    let summary_only = NotificationOptions { include_summary: true, include_documents: false, ..Default::default() };
    let report = sender.send(downloaded, ConnectFormat::Xml, &summary_only).await;
    assert!(report.delivered, "{:?} {:?}", report.last_status, report.last_error);
    let job_key = downloaded.envelope_id.to_string();
    eventually(WAIT, "a failed download attempt", || async {
        let job = app.store.job_by_key("process_envelope", &job_key).await.unwrap()?;
        let attempts = app.store.job_attempts(job.id).await.unwrap();
        attempts.iter().any(|a| a.outcome == Some(AttemptOutcome::Failed)).then_some(())
    })
    .await;
    let under = format!("{PREFIX}/{}/{}/", downloaded.account_id, downloaded.envelope_id);
    let objects = s3.objects("countersign").await;
    assert!(!objects.iter().any(|(key, _)| key.starts_with(&under)), "a truncated download is no object: {objects:?}");
    sandbox.sandbox.set_fault("combined", Fault::default());

    app.wait_processed(embedded).await;
    app.wait_processed(downloaded).await;
    let mut expected: Vec<(EnvelopeId, String, Vec<u8>)> = vec![
        (embedded.envelope_id, "certificate".into(), pdf::certificate_pdf(embedded)),
        (downloaded.envelope_id, "combined".into(), pdf::combined_pdf(downloaded, true)),
    ];
    for document in &embedded.documents {
        expected.push((embedded.envelope_id, document.document_id.clone(), pdf::document_pdf(embedded, document)));
    }
    let objects = s3.objects("countersign").await;
    assert_eq!(objects.len(), expected.len(), "one object per document: {objects:?}");
    for (envelope, document_id, bytes) in expected {
        let records = app.store.documents(envelope).await.unwrap();
        let record = records.iter().find(|r| r.document_id == document_id).unwrap();
        assert_eq!(record.size_bytes, bytes.len() as u64);
        assert_eq!(record.sha256, hex::encode(Sha256::digest(&bytes)));
        let object = format!("{PREFIX}/{}", record.storage_key);
        assert!(objects.contains(&(object.clone(), record.size_bytes)), "{object} in the bucket");
        let (size, read) = read_back(&app.documents, &record.storage_key).await;
        assert_eq!(size, record.size_bytes);
        assert!(read == bytes, "{} is byte-identical to DocuSign's", record.storage_key);
    }
    let left: Vec<_> = std::fs::read_dir(staging.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing left in staging: {left:?}");
    app.shutdown().await;
}
