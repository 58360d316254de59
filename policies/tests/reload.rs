//! Hot reload: a valid change takes effect, an invalid one is refused and the
//! old set keeps serving, and an `Arc` taken before a reload keeps its version.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dir_with, known, write, DEFAULT};
use warden_policies::{Action, ErrorKind, PolicyStore, ReloadOutcome, RequestScope};

const TENANT_FLAG: &str = "id: acme\ndescription: Acme.\napplies_to: {tenant: acme}\nallowed_tools: [calculator, get_weather]\n";
const TENANT_NARROW: &str =
    "id: acme\ndescription: Acme.\napplies_to: {tenant: acme}\nallowed_tools: [calculator]\n";

fn scope() -> RequestScope<'static> {
    RequestScope::new("acme", "k1", "m")
}

#[test]
fn valid_change_takes_effect_and_in_flight_arc_keeps_the_old_version() {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("acme.yaml", TENANT_FLAG)]);
    let store = PolicyStore::open(dir.path(), known()).unwrap();

    let in_flight = store.current();
    let before = in_flight.effective(&scope());
    assert!(before.allowed_tools.value.allows("get_weather"));
    assert_eq!(store.reload().unwrap(), ReloadOutcome::Unchanged);

    write(dir.path(), "acme.yaml", TENANT_NARROW);
    let outcome = store.reload().unwrap();
    assert!(matches!(outcome, ReloadOutcome::Changed { .. }));

    let after = store.current().effective(&scope());
    assert!(!after.allowed_tools.value.allows("get_weather"));
    assert_ne!(after.version, before.version);
    // The request that started before the reload still sees its policy.
    assert_eq!(in_flight.effective(&scope()), before);
    assert_ne!(in_flight.version(), store.current().version());
    assert!(store.last_errors().is_empty());
}

#[test]
fn invalid_change_is_refused_and_the_old_set_keeps_serving() {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("acme.yaml", TENANT_FLAG)]);
    let store = PolicyStore::open(dir.path(), known()).unwrap();
    let good = store.current();

    write(
        dir.path(),
        "acme.yaml",
        "id: acme\ndescription: Acme.\napplies_to: {tenant: acme}\nallowed_tools: [format_disk]\n",
    );
    let errs = store.reload().unwrap_err();
    assert_eq!(errs.0.len(), 1);
    assert!(matches!(errs.0[0].kind, ErrorKind::UnknownTool { .. }));

    assert!(
        Arc::ptr_eq(&good, &store.current()),
        "old set must keep serving"
    );
    let status = store.status();
    assert_eq!(status.reloads_failed, 1);
    assert_eq!(store.reload_failures(), 1);
    assert_eq!(status.last_errors.len(), 1);
    assert_eq!(status.version, *good.version());
    assert!(
        status.last_errors[0]
            .to_string()
            .contains("acme.yaml:4:17: allowed_tools[0]: unknown tool"),
        "{}",
        status.last_errors[0]
    );

    // Fixing the file clears the errors; the failure count stays.
    write(dir.path(), "acme.yaml", TENANT_NARROW);
    store.reload().unwrap();
    assert!(store.last_errors().is_empty());
    assert_eq!(store.reload_failures(), 1);
    assert_eq!(store.status().reloads_ok, 1);
}

#[test]
fn a_new_bad_file_refuses_the_whole_directory() {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("acme.yaml", TENANT_FLAG)]);
    let store = PolicyStore::open(dir.path(), known()).unwrap();
    let good = store.current();
    // A valid change and a broken new file at once: nothing of it applies.
    write(dir.path(), "acme.yaml", TENANT_NARROW);
    write(
        dir.path(),
        "zzz.yaml",
        "id: zzz\ndescription: Z.\napplies_to: default\nactions: {S1: nuke}\n",
    );
    assert!(store.reload().is_err());
    assert!(Arc::ptr_eq(&good, &store.current()));
    assert!(store
        .current()
        .effective(&scope())
        .allowed_tools
        .value
        .allows("get_weather"));
}

#[test]
fn open_refuses_an_invalid_directory() {
    let dir = dir_with(&[("default.yaml", "id: default\n")]);
    assert!(PolicyStore::open(dir.path(), known()).is_err());
}

#[test]
fn known_names_can_change_with_the_gateway_configuration() {
    let dir = dir_with(&[("default.yaml", DEFAULT), ("acme.yaml", TENANT_FLAG)]);
    let store = PolicyStore::open(dir.path(), known()).unwrap();
    let fewer = warden_policies::KnownNames::new(["llama-guard-local"], ["calculator"]);
    assert!(
        store.set_known(fewer).is_err(),
        "get_weather is no longer configured"
    );
    assert_eq!(store.reload_failures(), 1);
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watcher_reloads_on_file_changes() {
    let dir = dir_with(&[("default.yaml", DEFAULT)]);
    let store = Arc::new(PolicyStore::open(dir.path(), known()).unwrap());
    let watcher = store.watch().unwrap();
    let s1 = "S1".parse().unwrap();
    assert_eq!(
        store.current().effective(&scope()).action(s1),
        Some(Action::Block)
    );

    // A new file is picked up.
    write(dir.path(), "acme.yaml", TENANT_NARROW);
    wait_for("the new file", || store.current().get("acme").is_some());

    // A broken edit is refused and recorded; the set stays.
    let good = store.current();
    write(
        dir.path(),
        "acme.yaml",
        "id: acme\ndescription: A.\napplies_to: {tenant: acme}\nbogus: 1\n",
    );
    wait_for("the refused reload", || store.reload_failures() >= 1);
    assert!(Arc::ptr_eq(&good, &store.current()));

    // Removing the file is a valid change.
    std::fs::remove_file(dir.path().join("acme.yaml")).unwrap();
    wait_for("the removal", || store.current().get("acme").is_none());
    assert!(store.last_errors().is_empty());

    // After the watcher is dropped nothing reloads any more.
    drop(watcher);
    let version = store.current().version().clone();
    write(dir.path(), "acme.yaml", TENANT_NARROW);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(*store.current().version(), version);
}
