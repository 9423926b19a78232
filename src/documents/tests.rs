use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::*;
use crate::domain::{DocumentKind, DocumentSink};

fn local_store(dir: &Path) -> DocumentStore {
    let settings = DocumentsSettings { url: format!("file://{}", dir.display()), ..DocumentsSettings::default() };
    DocumentStore::open(&settings).unwrap()
}

fn ids() -> (AccountId, EnvelopeId) {
    (
        AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
        EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap(),
    )
}

async fn read_all(store: &DocumentStore, key: &str) -> (u64, Vec<u8>) {
    let document = store.read(key).await.unwrap();
    let chunks: Vec<Bytes> = document.body.try_collect().await.unwrap();
    (document.size, chunks.concat())
}

#[test]
fn hostile_file_names_become_one_safe_component() {
    assert_eq!(sanitise_file_name("../../etc/passwd"), "passwd");
    assert_eq!(sanitise_file_name("..\\..\\boot.ini"), "boot.ini");
    assert_eq!(sanitise_file_name("a\0b.pdf"), "a_b.pdf");
    assert_eq!(sanitise_file_name(".hidden"), "hidden");
    assert_eq!(sanitise_file_name(".."), "document");
    assert_eq!(sanitise_file_name(""), "document");
    assert_eq!(sanitise_file_name("Offer Letter.pdf"), "Offer Letter.pdf");
    assert_eq!(sanitise_file_name(&"x".repeat(400)).len(), 200);
    let long = format!("{}.pdf", "契約".repeat(60));
    let cut = sanitise_file_name(&long);
    assert!(cut.len() <= 200 && cut.ends_with(".pdf"), "{cut}");
}

#[test]
fn keys_cannot_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    for key in ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", ""] {
        assert!(store.path_of(key).is_err(), "{key:?}");
    }
    assert!(store.path_of("acc/env/file.pdf").is_ok());
}

#[tokio::test]
async fn staged_documents_are_published_whole_with_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let mut sink = store.staging_sink();
    sink.begin(Some("1"), "../Offer.pdf", DocumentKind::Content).unwrap();
    sink.write(b"%PDF-1.4 hello").unwrap();
    let doc = sink.finish().unwrap();
    assert_eq!(doc.size_bytes, 14);
    assert_eq!(doc.sha256, hex::encode(Sha256::digest(b"%PDF-1.4 hello")));
    let (account, envelope) = ids();
    let key = store.publish(&doc.storage_key, account, envelope, &doc.name).await.unwrap();
    assert_eq!(key, format!("{account}/{envelope}/Offer.pdf"));
    assert_eq!(std::fs::read(store.path_of(&key).unwrap()).unwrap(), b"%PDF-1.4 hello");
    assert!(!store.path_of(&doc.storage_key).unwrap().exists());
}

#[tokio::test]
async fn a_published_document_reads_back_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut upload = store.upload().await.unwrap();
    upload.write(&body).await.unwrap();
    let staged = upload.finish().await.unwrap();
    let (account, envelope) = ids();
    let key = store.publish(&staged.key, account, envelope, "Combined.pdf").await.unwrap();
    let (size, read) = read_all(&store, &key).await;
    assert_eq!(size, body.len() as u64);
    assert!(read == body, "the bytes read are the bytes written");
}

#[tokio::test]
async fn reading_refuses_keys_outside_the_documents() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let mut upload = store.upload().await.unwrap();
    upload.write(b"staged, not published").await.unwrap();
    let staged = upload.finish().await.unwrap();
    for key in ["../x", "/etc/passwd", "a//b", staged.key.as_str(), ".incoming"] {
        assert!(matches!(store.read(key).await, Err(DocumentError::BadKey(_))), "{key:?}");
    }
    let (account, envelope) = ids();
    assert!(matches!(store.read(&format!("{account}/{envelope}/none.pdf")).await, Err(DocumentError::NotFound(_))));
    assert!(matches!(store.read(&format!("{account}/{envelope}")).await, Err(DocumentError::NotFound(_))));
}

#[tokio::test]
async fn a_dropped_upload_leaves_nothing_staged() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    let mut upload = store.upload().await.unwrap();
    upload.write(b"half a docu").await.unwrap();
    drop(upload);
    let left: Vec<_> = std::fs::read_dir(dir.path().join(STAGING)).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
