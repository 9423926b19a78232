//! moto, a real AWS API (SQS, S3, IAM) in one process: each test starts its
//! own on a free loopback port, so it can be stopped and started without
//! disturbing other tests. Tests read back what countersign sent with
//! boto3, a client independent of the one under test.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The account moto gives every queue.
const ACCOUNT: &str = "123456789012";

/// Put before every boto3 script: the script gets its one JSON argument as
/// `args` and `client(service)` aimed at this moto, and prints one JSON answer.
const PRELUDE: &str = r#"
import json, sys
import boto3

args = json.loads(sys.argv[1])

def client(service):
    return boto3.client(
        service,
        endpoint_url=args["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=args.get("key", "testing"),
        aws_secret_access_key=args.get("secret", "testing"),
    )
"#;

/// One message as boto3 received it.
#[derive(Debug)]
pub struct Received {
    pub body: String,
    /// Message attributes: `ce-id`, `content-type`, …
    pub attributes: BTreeMap<String, String>,
    /// System attributes: `MessageGroupId`, `MessageDeduplicationId`, …
    pub system: BTreeMap<String, String>,
}

/// moto on a free loopback port, stopped when dropped.
pub struct Moto {
    port: u16,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    /// boto3's credentials once moto checks them.
    keys: Option<(String, String)>,
}

impl Moto {
    pub async fn start() -> Self {
        let installed = Command::new("python3")
            .args(["-c", "import moto.server, boto3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            installed,
            "these tests run against a real AWS API, moto's, which python3 cannot import (with boto3): install it \
             with `python3 -m pip install \"moto[server]\"` (scripts/test.sh does)"
        );
        let mut moto = Self {
            port: crate::common::process::free_port(),
            child: None,
            log: tempfile::NamedTempFile::new().unwrap(),
            keys: None,
        };
        moto.resume().await;
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn queue_url(&self, name: &str) -> String {
        format!("{}/{ACCOUNT}/{name}", self.endpoint())
    }

    /// Starts moto (again) on its port, empty: it keeps everything only in
    /// memory.
    pub async fn resume(&mut self) {
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(self.log.reopen().unwrap())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while http.get(self.endpoint()).send().await.is_err() {
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                panic!("moto did not answer on {} within 30 s; its output:\n{log}", self.endpoint());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: connections refused until [`Moto::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `script` after [`PRELUDE`], with `args` as its argument; returns
    /// what it prints, as JSON.
    pub async fn boto3(&self, script: &str, mut args: Value) -> Value {
        let program = format!("{PRELUDE}{script}");
        args["endpoint"] = json!(self.endpoint());
        if let Some((key, secret)) = &self.keys {
            args["key"] = json!(key);
            args["secret"] = json!(secret);
        }
        let output = tokio::task::spawn_blocking(move || {
            Command::new("python3").args(["-c", &program, &args.to_string()]).stdin(Stdio::null()).output().unwrap()
        })
        .await
        .unwrap();
        assert!(output.status.success(), "boto3 failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// A queue named `name`, FIFO if the name says so; returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        let script = r#"
attributes = {"FifoQueue": "true"} if args["name"].endswith(".fifo") else {}
print(json.dumps(client("sqs").create_queue(QueueName=args["name"], Attributes=attributes)["QueueUrl"]))
"#;
        let url = self.boto3(script, json!({ "name": name })).await;
        assert_eq!(url, json!(self.queue_url(name)), "moto's queue URL");
        self.queue_url(name)
    }

    /// Receives and deletes every message in the queue.
    pub async fn drain(&self, url: &str) -> Vec<Received> {
        let script = r#"
sqs = client("sqs")
result = []
while True:
    answer = sqs.receive_message(
        QueueUrl=args["url"],
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    messages = answer.get("Messages", [])
    if not messages:
        break
    for message in messages:
        result.append({
            "body": message["Body"],
            "attributes": {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()},
            "system": message.get("Attributes", {}),
        })
        sqs.delete_message(QueueUrl=args["url"], ReceiptHandle=message["ReceiptHandle"])
print(json.dumps(result))
"#;
        let answer = self.boto3(script, json!({ "url": url })).await;
        let map = |value: &Value| -> BTreeMap<String, String> {
            value.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
        };
        answer
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Received {
                body: m["body"].as_str().unwrap().to_string(),
                attributes: map(&m["attributes"]),
                system: map(&m["system"]),
            })
            .collect()
    }

    /// From now on moto checks every request's SigV4 signature (botocore
    /// recomputes it) against an IAM user it made, whose keys it returns.
    pub async fn check_signatures(&mut self) -> (String, String) {
        let script = r#"
iam = client("iam")
iam.create_user(UserName=args["user"])
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}
iam.put_user_policy(UserName=args["user"], PolicyName="sqs", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName=args["user"])["AccessKey"]
print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
"#;
        let user = self.boto3(script, json!({ "user": "countersign" })).await;
        let keys = (user["key"].as_str().unwrap().to_string(), user["secret"].as_str().unwrap().to_string());
        let answer = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.endpoint()))
            .header("content-type", "text/plain")
            .body("0")
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "moto's reset-auth: {}", answer.status());
        self.keys = Some(keys.clone());
        keys
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
