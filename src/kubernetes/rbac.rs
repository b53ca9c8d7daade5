//! What `rproxy --kubernetes` asks of the API server, as RBAC rules: the one list the shipped
//! ClusterRole (`deploy/kubernetes/controller/`) and the Helm chart (`deploy/helm/rproxy`) are
//! checked against, both ways (every rule granted, nothing granted beyond them). A watch or a
//! write added to the controller adds its rule here.

/// One RBAC rule: `verbs` on `resources` of the API `group` (`""`: the core group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];

/// Every rule the controller needs, cluster-wide.
pub const RULES: &[Rule] = &[
    // The objects translated into routes, pools and certificates (controller.rs).
    Rule {
        group: "networking.k8s.io",
        resources: &["ingressclasses", "ingresses"],
        verbs: READ,
    },
    Rule {
        group: "",
        resources: &["services", "secrets"],
        verbs: READ,
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: READ,
    },
];

/// Whether `RULES` grant `verb` on `resource` of `group`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .any(|r| r.group == group && r.resources.contains(&resource) && r.verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_granted_and_writes_are_not_unless_listed() {
        assert!(allows("networking.k8s.io", "ingresses", "watch"));
        assert!(allows("discovery.k8s.io", "endpointslices", "list"));
        assert!(!allows("", "secrets", "delete"));
        assert!(!allows("apps", "deployments", "get"));
    }
}
