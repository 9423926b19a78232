//! deploy/kubernetes/: every manifest is a valid Kubernetes object
//! (kubernetes-validate, offline, strict), the kustomization applies all of
//! them but the example Secret, and the countersign.toml the ConfigMap ships
//! loads with countersign's own loader and agrees with the Deployment around
//! it: probes, port, grace period, secret files, writable paths.
//!
//! The YAML is read through python3's PyYAML, which kubernetes-validate
//! depends on, so the crate needs no YAML parser of its own.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use countersign::config::{DocumentsLocation, Settings};
use figment::providers::{Format, Toml};
use serde_json::Value;

/// The Kubernetes release the manifests are checked against: the oldest
/// one they are meant for (the preStop `sleep` hook is on by default from 1.30).
const KUBERNETES_VERSION: &str = "1.30";

const INSTALL: &str = "install it with `python3 -m pip install 'kubernetes-validate>=1.37,<1.38'` \
     (bash scripts/test.sh does so); it brings the Kubernetes JSON schemas and PyYAML along";

/// countersign hands a job's lease back within this long once
/// `server.shutdown_grace` is over (src/service.rs bounds the release).
const LEASE_RELEASE_SECS: f64 = 5.0;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every manifest: the YAML files of the directory but the kustomization,
/// which is kustomize's, not a Kubernetes object.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .filter(|path| path.file_name().is_some_and(|name| name != "kustomization.yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir().display());
    files
}

/// The documents of a YAML file, as JSON.
fn documents(file: &Path) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
        print(json.dumps(docs))";
    let output = match Command::new("python3").args(["-c", SCRIPT]).arg(file).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("python3 is not installed; these tests need it"),
        Err(e) => panic!("running python3: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'yaml'"),
        "python3 cannot import yaml (PyYAML), which these tests read the manifests with: {INSTALL}"
    );
    assert!(output.status.success(), "{} is not YAML PyYAML reads:\n{stderr}", file.display());
    match serde_json::from_slice(&output.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

fn all_objects() -> Vec<Value> {
    manifest_files().iter().flat_map(|file| documents(file)).collect()
}

/// The one object of `kind` among the manifests.
fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind} in deploy/kubernetes/");
    found[0]
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

fn number(value: &Value, what: &str) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

#[test]
fn manifests_pass_kubernetes_validate_offline() {
    let files = manifest_files();
    let output = match Command::new("kubernetes-validate")
        .args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .args(&files)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("kubernetes-validate is not on PATH; it checks deploy/kubernetes/ offline: {INSTALL}")
        }
        Err(e) => panic!("running kubernetes-validate: {e}"),
    };
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "kubernetes-validate refused a manifest:\n{report}");
    // A kind or apiVersion it has no schema for is only a warning there: a
    // misspelt one would pass unchecked.
    let not_passed: Vec<&str> =
        report.lines().filter(|line| !line.trim().is_empty() && !line.starts_with("INFO")).collect();
    assert!(not_passed.is_empty(), "kubernetes-validate did not check everything:\n{report}");
    let objects: usize = files.iter().map(|file| documents(file).len()).sum();
    let passed = report.lines().filter(|line| line.contains(" passed for resource ")).count();
    assert_eq!(passed, objects, "every object must be validated:\n{report}");
}

#[test]
fn the_kustomization_applies_every_manifest_but_the_example_secret() {
    let kustomization = documents(&dir().join("kustomization.yaml")).remove(0);
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| text(r, "a resource"))
        .collect();
    let files = manifest_files();
    let expected: BTreeSet<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .filter(|name| *name != "secret.example.yaml")
        .collect();
    assert_eq!(listed, expected, "kustomization.yaml must list every manifest except secret.example.yaml");

    // kustomize rewrites the image by its name: the one docker/ and README build.
    let objects = all_objects();
    let deployment = only(&objects, "Deployment");
    let image = &deployment["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "countersign");
    assert_eq!(kustomization["images"][0]["name"], "countersign");
}

/// A value each secret file can hold that the loader accepts, chosen by the
/// file's name.
fn test_secret(name: &str) -> String {
    use base64::Engine;
    if name.ends_with(".pem") {
        countersign::sandbox::Identity::generate("https://example.com").unwrap().private_key_pem
    } else if name.contains("webhook") {
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
    } else {
        format!("{name}-deploy-test-0123456789abcdef\n")
    }
}

/// Every `*_file` value in the settings, wherever it sits.
fn secret_files(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match inner {
                    Value::String(path) if key.ends_with("_file") => found.push(path.clone()),
                    _ => secret_files(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| secret_files(item, found)),
        _ => {}
    }
}

/// The container port a probe or Service names, by name or by number.
fn port_number(port: &Value, container: &Value) -> f64 {
    if let Some(number) = port.as_f64() {
        return number;
    }
    let name = text(port, "a port");
    let ports = container["ports"].as_array().expect("the container declares its ports");
    let declared = ports.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no container port {name}"));
    number(&declared["containerPort"], "containerPort")
}

#[test]
fn the_shipped_configuration_loads_and_agrees_with_the_deployment() {
    let objects = all_objects();
    let deployment = only(&objects, "Deployment");
    let config_map = only(&objects, "ConfigMap");
    let secret = only(&objects, "Secret");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container: countersign");
    let container = &containers[0];
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &Value| -> String {
        let name = &volume["name"];
        let mount = mounts.iter().find(|m| &m["name"] == name).unwrap_or_else(|| panic!("volume {name} unmounted"));
        text(&mount["mountPath"], "mountPath").trim_end_matches('/').to_string()
    };

    // The configuration file: the ConfigMap's key, mounted where --config says.
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| text(a, "an argument")).collect();
    let at = args.iter().position(|a| *a == "--config").expect("serve is given --config");
    assert_eq!(args[0], "serve");
    let config_path = args[at + 1];
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("the ConfigMap is mounted");
    let (config_dir, config_key) = config_path.rsplit_once('/').unwrap();
    assert_eq!(mount_of(config_volume), config_dir, "--config {config_path} must be in the ConfigMap's mount");
    let toml = text(&config_map["data"][config_key], "the ConfigMap's countersign.toml");

    // Every secret file is a key of the Secret, mounted where the TOML says;
    // the test's own values take the place of the placeholders.
    let secret_volume = volumes
        .iter()
        .find(|v| v["secret"]["secretName"] == secret["metadata"]["name"])
        .expect("the Secret is mounted");
    let secret_dir = format!("{}/", mount_of(secret_volume));
    let keys: BTreeSet<&str> = secret["stringData"].as_object().unwrap().keys().map(String::as_str).collect();
    let raw: Value = figment::Figment::from(Toml::string(toml)).extract().unwrap();
    let mut paths = Vec::new();
    secret_files(&raw, &mut paths);
    assert!(!paths.is_empty(), "the secrets come from files");
    let temp = tempfile::tempdir().unwrap();
    let mut used = BTreeSet::new();
    for path in &paths {
        let key = path.strip_prefix(&secret_dir).unwrap_or_else(|| panic!("{path} is not under {secret_dir}"));
        assert!(keys.contains(key), "{path}: secret.example.yaml has no key {key:?}");
        std::fs::write(temp.path().join(key), test_secret(key)).unwrap();
        used.insert(key);
    }
    assert_eq!(used, keys, "every key of the Secret is read through a *_file setting");
    let toml = toml.replace(&secret_dir, &format!("{}/", temp.path().display()));
    let settings =
        Settings::from_toml(&toml).unwrap_or_else(|e| panic!("configmap.yaml's countersign.toml does not load: {e}"));

    // Several replicas need PostgreSQL; so do documents outside the pod.
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(settings.store.url.starts_with("postgres://"), "two replicas share a PostgreSQL store");
    assert!(matches!(settings.documents.location(), Ok(DocumentsLocation::S3 { .. })), "documents go to S3");
    assert_eq!(
        pod["enableServiceLinks"], false,
        "Service links set COUNTERSIGN_PORT and the like, which countersign refuses as unknown settings"
    );

    // The probes reach the port server.listen opens.
    let listen = f64::from(settings.server.listen.port());
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        if probe == "startupProbe" && get.is_null() {
            continue;
        }
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(port_number(&get["port"], container), listen, "{probe} must ask server.listen's port");
    }
    let service = only(&objects, "Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["port"], 8080);
    assert!(service_port["name"].is_string(), "the Service port is named");
    assert_eq!(port_number(&service_port["targetPort"], container), listen, "the Service targets server.listen");

    // The kubelet's SIGKILL must not cut the drain short.
    let grace = settings.server.shutdown_grace.as_secs_f64();
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_f64().unwrap_or(0.0);
    let termination = number(&pod["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds");
    assert!(
        termination > pre_stop + grace + LEASE_RELEASE_SECS,
        "terminationGracePeriodSeconds ({termination}) must exceed the preStop wait ({pre_stop}s) + \
         server.shutdown_grace ({grace}s) + the lease release ({LEASE_RELEASE_SECS}s)"
    );

    // The root file system is read-only: whatever countersign writes (the
    // temporary directory for spooled bodies, the S3 staging directory)
    // lies on an emptyDir.
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    let writable: Vec<String> = volumes.iter().filter(|v| v["emptyDir"].is_object()).map(mount_of).collect();
    assert!(container["env"].as_array().is_none_or(|env| env.iter().all(|e| e["name"] != "TMPDIR")));
    assert!(writable.iter().any(|w| w == "/tmp"), "the temporary directory /tmp needs an emptyDir");
    let staging = settings.documents.staging_dir.clone().expect("documents.staging_dir is set");
    assert!(writable.iter().any(|w| staging.starts_with(w)), "{} is not on an emptyDir", staging.display());

    // The user the image runs as (docker/Dockerfile's USER).
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/Dockerfile")).unwrap();
    let user = dockerfile.lines().find_map(|l| l.strip_prefix("USER ")).expect("the Dockerfile names its USER");
    let (uid, gid) = user.trim().split_once(':').unwrap();
    for context in [&pod["securityContext"], security] {
        assert_eq!(context["runAsUser"].to_string(), uid);
        assert_eq!(context["runAsGroup"].to_string(), gid);
        assert_eq!(context["runAsNonRoot"], true);
    }

    let budget = only(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"]);
}
