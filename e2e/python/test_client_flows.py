"""The official Python `kubernetes` client against Skiff: list, watch, paginate, conflicts."""

import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def cm(name, **data):
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data or None)


def test_create_get_list_delete(core):
    created = core.create_namespaced_config_map("default", cm("one", a="1"))
    assert created.metadata.uid
    assert int(created.metadata.resource_version) > 0
    got = core.read_namespaced_config_map("one", "default")
    assert got.data == {"a": "1"}
    names = [i.metadata.name for i in core.list_namespaced_config_map("default").items]
    assert "one" in names
    core.delete_namespaced_config_map("one", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("one", "default")
    assert err.value.status == 404


def test_stale_update_conflicts(core):
    first = core.create_namespaced_config_map("default", cm("race", v="0"))
    first.data = {"v": "1"}
    core.replace_namespaced_config_map("race", "default", first)
    first.data = {"v": "2"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("race", "default", first)
    assert err.value.status == 409
    assert "the object has been modified" in err.value.body
    assert core.read_namespaced_config_map("race", "default").data == {"v": "1"}


def test_pagination_with_limit_and_continue(core):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="paged")))
    for i in range(23):
        core.create_namespaced_config_map("paged", cm(f"item-{i:02d}"))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map("paged", limit=5, _continue=token)
        # Every namespace also holds kube-root-ca.crt, published by the controller manager.
        seen += [i.metadata.name for i in page.items if i.metadata.name.startswith("item-")]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert pages == 5
    assert seen == sorted(f"item-{i:02d}" for i in range(23))


def test_watch_streams_changes_in_order(core):
    start = core.list_namespaced_config_map("default").metadata.resource_version
    events = []
    w = watch.Watch()

    def consume():
        for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=start, timeout_seconds=10):
            if ev["object"].metadata.name != "watched":
                continue  # other writers (the controller manager) share the namespace
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 3:
                w.stop()

    t = threading.Thread(target=consume)
    t.start()
    core.create_namespaced_config_map("default", cm("watched", a="1"))
    core.patch_namespaced_config_map("watched", "default", {"data": {"a": "2"}})
    core.delete_namespaced_config_map("watched", "default")
    t.join(timeout=15)
    assert events == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


def test_label_selectors_and_field_selectors(core):
    for name, tier in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")]:
        body = cm(name)
        body.metadata.labels = {"tier": tier}
        core.create_namespaced_config_map("default", body)
    web = core.list_namespaced_config_map("default", label_selector="tier=web").items
    assert sorted(i.metadata.name for i in web) == ["web-1", "web-2"]
    # `notin` alone also matches objects without the label (kube-root-ca.crt), as upstream.
    notin = core.list_namespaced_config_map("default", label_selector="tier,tier notin (web)").items
    assert [i.metadata.name for i in notin] == ["db-1"]
    one = core.list_namespaced_config_map("default", field_selector="metadata.name=db-1").items
    assert [i.metadata.name for i in one] == ["db-1"]


def test_invalid_object_is_422_with_causes(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", cm("Not_Valid"))
    assert err.value.status == 422
    assert "Invalid" in err.value.body


def test_data_survives_restart(server, core):
    core.create_namespaced_config_map("default", cm("durable", k="v"))
    server.restart()
    fresh = client.CoreV1Api(server.api_client())
    assert fresh.read_namespaced_config_map("durable", "default").data == {"k": "v"}
