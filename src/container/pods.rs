//! `--pod`: every container of a pod, by the pod's name (`shop`), its
//! Kubernetes `namespace/name` (`prod/shop`) or a unique prefix of its id
//! (a podman pod id, a Kubernetes pod UID).
//!
//! A pod is what the runtimes' state says the running containers belong to
//! ([`Container::pod`]): podman pods, and Kubernetes pods run through
//! containerd's CRI plugin, CRI-O or docker (cri-dockerd). Its containers
//! include the pod's infra or sandbox container (`POD` under Kubernetes),
//! whose process only waits.

use std::fmt;

use super::{short_id, Container, Pod, ResolveError, MIN_PREFIX};

/// A running pod and the containers in it now.
#[derive(Clone, Debug)]
pub struct RunningPod<'a> {
    pub pod: &'a Pod,
    pub containers: Vec<&'a Container>,
}

impl RunningPod<'_> {
    /// The pod as frames show it: `namespace/name`, or `name`.
    pub fn display_name(&self) -> String {
        self.pod.display_name()
    }
}

/// The pods of `running`, one per pod id and name, sorted by namespace,
/// name and id; containers in the order given.
pub fn running_pods(running: &[Container]) -> Vec<RunningPod<'_>> {
    let mut pods: Vec<RunningPod<'_>> = Vec::new();
    for c in running {
        let Some(pod) = &c.pod else { continue };
        match pods.iter_mut().find(|p| p.pod == pod) {
            Some(p) => p.containers.push(c),
            None => pods.push(RunningPod {
                pod,
                containers: vec![c],
            }),
        }
    }
    pods.sort_by(|a, b| {
        (&a.pod.namespace, &a.pod.name, &a.pod.id).cmp(&(&b.pod.namespace, &b.pod.name, &b.pod.id))
    });
    pods
}

/// Whether two pods are the same pod for `--pod`: the same namespace and
/// name (a Kubernetes pod recreated under its name, a StatefulSet's, is
/// the pod the user means).
pub fn same_pod(a: &Pod, b: &Pod) -> bool {
    a.namespace == b.namespace && a.name == b.name
}

/// Resolves `--pod` specs (comma-separated lists are split) to the
/// containers of the pods they name, each container once, in the order of
/// `running`, and the pods. A spec is `namespace/name`, a name (which must
/// not name pods in two namespaces), or a unique prefix of at least
/// [`MIN_PREFIX`] characters of a pod id. Pods recreated under the same
/// name (a Kubernetes pod whose old containers are still stopping) count
/// as one.
pub fn resolve_pods_in(
    specs: &[String],
    running: &[Container],
) -> Result<(Vec<Container>, Vec<Pod>), ResolveError> {
    let pods = running_pods(running);
    let mut chosen: Vec<&Pod> = Vec::new();
    for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim) {
        for p in resolve_one(spec, &pods, running)? {
            if !chosen.iter().any(|c| same_pod(c, p.pod)) {
                chosen.push(p.pod);
            }
        }
    }
    let containers = running
        .iter()
        .filter(|c| {
            c.pod
                .as_ref()
                .is_some_and(|p| chosen.iter().any(|c| same_pod(c, p)))
        })
        .cloned()
        .collect();
    Ok((containers, chosen.into_iter().cloned().collect()))
}

fn resolve_one<'p, 'a>(
    spec: &str,
    pods: &'p [RunningPod<'a>],
    running: &[Container],
) -> Result<Vec<&'p RunningPod<'a>>, ResolveError> {
    let invalid = |reason| ResolveError::InvalidPod {
        spec: spec.to_string(),
        reason,
    };
    if spec.is_empty() {
        return Err(invalid("an empty pod name"));
    }
    let named: Vec<&RunningPod<'_>> = match spec.split_once('/') {
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() || name.contains('/') {
                return Err(invalid("give a pod name, or namespace/name"));
            }
            pods.iter()
                .filter(|p| p.pod.name == name && p.pod.namespace.as_deref() == Some(ns))
                .collect()
        }
        None => pods.iter().filter(|p| p.pod.name == spec).collect(),
    };
    let namespaces = |list: &[&RunningPod<'_>]| {
        let mut ns: Vec<&Option<String>> = list.iter().map(|p| &p.pod.namespace).collect();
        ns.dedup();
        ns.len()
    };
    if !named.is_empty() {
        if namespaces(&named) > 1 {
            return Err(ResolveError::AmbiguousPod {
                spec: spec.to_string(),
                matches: containers_of(&named),
            });
        }
        return Ok(named);
    }
    // A pod id prefix: podman's 64 hex digits, a Kubernetes UID.
    let lower = spec.to_ascii_lowercase();
    if lower.len() >= MIN_PREFIX && lower.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        let by_id: Vec<&RunningPod<'_>> = pods
            .iter()
            .filter(|p| !p.pod.id.is_empty() && p.pod.id.to_ascii_lowercase().starts_with(&lower))
            .collect();
        match by_id.len() {
            0 => {}
            1 => return Ok(by_id),
            _ => {
                return Err(ResolveError::AmbiguousPod {
                    spec: spec.to_string(),
                    matches: containers_of(&by_id),
                })
            }
        }
    }
    Err(ResolveError::PodNotFound {
        spec: spec.to_string(),
        running: running.to_vec(),
    })
}

fn containers_of(pods: &[&RunningPod<'_>]) -> Vec<Container> {
    pods.iter()
        .flat_map(|p| p.containers.iter().map(|c| (*c).clone()))
        .collect()
}

/// The pods of `running` as a table: pod, id, runtime, containers.
pub(super) fn write_pod_table(f: &mut fmt::Formatter<'_>, running: &[Container]) -> fmt::Result {
    let pods = running_pods(running);
    let width = pods
        .iter()
        .map(|p| p.display_name().len())
        .max()
        .unwrap_or(0)
        .max("POD".len());
    write!(
        f,
        "  {:width$}  {:12}  {:10}  CONTAINERS",
        "POD", "ID", "RUNTIME"
    )?;
    for p in &pods {
        let mut runtimes: Vec<String> = p
            .containers
            .iter()
            .map(|c| c.runtime.map_or("unknown".to_string(), |r| r.to_string()))
            .collect();
        runtimes.sort();
        runtimes.dedup();
        let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
        write!(
            f,
            "\n  {:width$}  {:12}  {:10}  {}",
            p.display_name(),
            short_id(&p.pod.id),
            runtimes.join(","),
            names.join(", ")
        )?;
    }
    Ok(())
}

/// The message for a pod spec nothing matched: the running pods, or why
/// there are none.
pub(super) fn write_not_found(
    f: &mut fmt::Formatter<'_>,
    spec: &str,
    running: &[Container],
) -> fmt::Result {
    write!(f, "no running pod is named `{spec}`")?;
    if !spec.contains('/') {
        write!(f, " or has an id starting with it")?;
    }
    if running.iter().any(|c| c.pod.is_some()) {
        writeln!(f, "; running pods:")?;
        return write_pod_table(f, running);
    }
    write!(
        f,
        "; flameprobe sees no pods (podman pods, and Kubernetes pods through containerd, \
         CRI-O or docker)"
    )?;
    if running.is_empty() {
        write!(f, " and no running containers")
    } else {
        writeln!(f, "; containers running outside pods (use --container):")?;
        super::write_table(f, running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{resolve_selection_in, Runtime, Selection};

    fn ctr(
        name: &str,
        id_digit: char,
        runtime: Runtime,
        pod: Option<(&str, Option<&str>, &str)>,
    ) -> Container {
        Container {
            id: id_digit.to_string().repeat(64),
            name: name.into(),
            runtime: Some(runtime),
            pod: pod.map(|(name, namespace, id)| Pod {
                id: id.into(),
                name: name.into(),
                namespace: namespace.map(str::to_string),
            }),
            cgroup_path: format!("/kubepods/besteffort/pod{id_digit}/{id_digit}"),
            cgroup_id: Some(1),
            pids: vec![1],
        }
    }

    const PROD_UID: &str = "4fe556a4-0bd7-45be-966f-46e2cbf4c4ac";
    const STAGING_UID: &str = "55c6c714-b240-4dec-9a45-57b61696ab6e";
    const PODMAN_POD: &str = "fc34ea7aea167e23b9b707ed7a8abb892ece7640c2e0254f0595c458b45c6ea4";

    fn running() -> Vec<Container> {
        let prod = Some(("shop", Some("prod"), PROD_UID));
        vec![
            ctr("POD", '1', Runtime::Containerd, prod),
            ctr("cart", '2', Runtime::Containerd, prod),
            ctr(
                "POD",
                '3',
                Runtime::Containerd,
                Some(("shop", Some("staging"), STAGING_UID)),
            ),
            ctr(
                "web",
                '4',
                Runtime::Podman,
                Some(("blog", None, PODMAN_POD)),
            ),
            ctr("db", '5', Runtime::Docker, None),
            ctr(
                "api",
                '6',
                Runtime::Docker,
                Some((
                    "api-7d4b9",
                    Some("prod"),
                    "9a1b2c3d-0000-4000-8000-000000000001",
                )),
            ),
        ]
    }

    fn pods(specs: &[&str], running: &[Container]) -> Result<Vec<String>, String> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        resolve_pods_in(&specs, running)
            .map(|(cs, _)| cs.into_iter().map(|c| c.id[..1].to_string()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn resolves_names_namespaces_and_ids() {
        let all = running();
        assert_eq!(pods(&["prod/shop"], &all).unwrap(), ["1", "2"]);
        assert_eq!(pods(&["staging/shop"], &all).unwrap(), ["3"]);
        assert_eq!(pods(&["blog"], &all).unwrap(), ["4"]);
        assert_eq!(pods(&["api-7d4b9"], &all).unwrap(), ["6"]);
        // Each container once, in listing order.
        assert_eq!(
            pods(&["prod/api-7d4b9,blog", "prod/shop", "blog"], &all).unwrap(),
            ["1", "2", "4", "6"]
        );
        // Pod id prefixes: a podman pod id, a Kubernetes UID.
        assert_eq!(pods(&["fc34ea"], &all).unwrap(), ["4"]);
        assert_eq!(pods(&["4FE556A4-0bd7"], &all).unwrap(), ["1", "2"]);
        // A recreated pod (same namespace and name, a new UID) is the pod.
        let mut again = all.clone();
        again.push(ctr(
            "cart",
            '7',
            Runtime::Containerd,
            Some(("shop", Some("prod"), STAGING_UID)),
        ));
        assert_eq!(pods(&["prod/shop"], &again).unwrap(), ["1", "2", "7"]);
        // With --container: both, each container once.
        let both = resolve_selection_in(
            &Selection {
                containers: vec!["db".into(), "cart".into()],
                pods: vec!["prod/shop".into()],
            },
            &all,
        )
        .unwrap();
        let names: Vec<&str> = both.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["db", "cart", "POD"]);
        let pods: Vec<String> = both.pods.iter().map(Pod::display_name).collect();
        assert_eq!(pods, ["prod/shop"]);
    }

    #[test]
    fn explains_what_did_not_resolve() {
        let all = running();
        let err = pods(&["shop"], &all).unwrap_err();
        assert!(
            err.starts_with("pod name `shop` is used in 2 namespaces; give namespace/name:"),
            "{err}"
        );
        assert!(
            err.contains("prod/shop") && err.contains("staging/shop"),
            "{err}"
        );
        assert!(!err.contains("blog"), "only the matches: {err}");

        let err = pods(&["prod/nope"], &all).unwrap_err();
        assert!(
            err.starts_with("no running pod is named `prod/nope`; running pods:"),
            "{err}"
        );
        for line in [
            "  POD ",
            "prod/shop       4fe556a4-0bd  containerd  POD, cart",
            "blog            fc34ea7aea16  podman      web",
            "staging/shop",
            "prod/api-7d4b9",
        ] {
            assert!(err.contains(line), "{line:?} missing from:\n{err}");
        }
        assert!(
            !err.contains(" db"),
            "containers outside pods are not pods: {err}"
        );

        let err = pods(&["nope"], &all).unwrap_err();
        assert!(
            err.contains("`nope` or has an id starting with it"),
            "{err}"
        );

        // Two pods whose ids start alike.
        let mut twins = all.clone();
        twins.push(ctr(
            "x",
            '8',
            Runtime::Podman,
            Some(("other", None, &format!("fc34{}", "0".repeat(60)))),
        ));
        let err = pods(&["fc34"], &twins).unwrap_err();
        assert!(
            err.starts_with("pod id prefix `fc34` matches 2 pods"),
            "{err}"
        );

        let outside: Vec<Container> = all.iter().filter(|c| c.pod.is_none()).cloned().collect();
        let err = pods(&["shop"], &outside).unwrap_err();
        assert!(err.contains("flameprobe sees no pods"), "{err}");
        assert!(
            err.contains("(use --container)") && err.contains("db"),
            "{err}"
        );
        let err = pods(&["shop"], &[]).unwrap_err();
        assert!(err.ends_with("and no running containers"), "{err}");

        for bad in ["", "prod/", "/shop", "a/b/c"] {
            let err = pods(&[bad], &all).unwrap_err();
            assert!(err.starts_with(&format!("pod `{bad}`: ")), "{err}");
        }
    }
}
