#!/usr/bin/env python3
"""Generate crates/api/src/listmeta/generated.rs: list/map/patch metadata of the built-in types.

Source: the k8s-openapi crate (feature v1_35), whose generated code carries what the upstream
OpenAPI document says about each field:

- `// Generated from definition io.k8s.api.core.v1.PodSpec` names the OpenAPI definition;
- the struct's field types name the types of nested objects (so SMP can descend);
- the serde `Deserialize` impl maps each Rust field name to its JSON name;
- the `impl DeepMerge` block says how lists and maps merge: `merge_strategies::list::atomic`,
  `list::set`, `list::map(.., &[|lhs, rhs| lhs.name == rhs.name], ..)`, `map::atomic`,
  `map::granular`;
- `impl crate::Resource` gives each kind's group, version and plural.

k8s-openapi's codegen folds two upstream notions into one: a list with
`x-kubernetes-patch-strategy: merge` becomes `list::map` keyed by the patch merge key (or
`list::set` without key), otherwise `x-kubernetes-list-type`/`-list-map-keys` decide. So the
same `list::map(name)` can mean "SMP merges on name" or "server-side apply keys on name but
SMP replaces". The OVERRIDES table below restores the upstream facts where the two differ;
it was cross-checked against the Go struct tags (`patchStrategy`, `patchMergeKey`) and
markers (`+listType`, `+listMapKey`, `+mapType`) of k8s.io/api, k8s.io/apimachinery,
k8s.io/apiextensions-apiserver and k8s.io/kube-aggregator at release-1.35 with
`--check-go DIR` (DIR holding those trees as api/, apimachinery/, apiextensions/,
aggregator/). Run that check again when bumping the Kubernetes version: it prints every field
where the generated table and the Go tags still disagree.

Usage:
    python3 tools/gen-listmeta.py                  # regenerate (run from the repository root)
    python3 tools/gen-listmeta.py --check-go DIR   # also cross-check against Go sources
    python3 tools/gen-listmeta.py --stdout         # print instead of writing
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys

K8S_OPENAPI_VERSION = "0.29.0"
K8S_FEATURE = "v1_35"
OUTPUT = "crates/api/src/listmeta/generated.rs"

# ---------------------------------------------------------------------------------------------
# Overrides: (definition, json field) -> changes. Keys:
#   "ssa": list type for server-side apply, ("map", [keys]) | ("set",) | ("atomic",)
#   "smp": strategic-merge-patch strategy, a string as in the Go tag ("merge", "retainKeys",
#          "merge,retainKeys", "replace") or "" for none (lists are then replaced)
#   "key": the SMP patchMergeKey (None for none)
# Every entry must change something; the generator fails on a stale entry.
# ---------------------------------------------------------------------------------------------


def _ssa_keys(definition, field, keys, why):
    return (definition, field, {"ssa": ("map", keys)}, why)


def _smp_none(definition, field, why):
    return (definition, field, {"smp": "", "key": None}, why)


OVERRIDES = []

# 1. Lists whose server-side-apply key has more fields than the SMP patchMergeKey. k8s-openapi
#    keeps only the patch merge key; upstream +listMapKey lists them all.
#    (upstream: k8s.io/api/core/v1/types.go, `+listType=map +listMapKey=containerPort
#    +listMapKey=protocol` next to `patchMergeKey:"containerPort"`.)
SSA_MULTI_KEYS = [
    ("io.k8s.api.core.v1.Container", "ports", ["containerPort", "protocol"]),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", ["containerPort", "protocol"]),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", ["port", "protocol"]),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", ["topologyKey", "whenUnsatisfiable"]),
]

# 2. Lists that server-side apply treats as a map or set but that carry no patchStrategy tag:
#    strategic merge patch replaces them whole (upstream: strategicpatch falls back to replace
#    when the struct field has no `patchStrategy:"merge"`). Filled in from the --check-go report.
SMP_REPLACE = [
    ("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpec", "validationActions"),
    ("io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyStatus", "conditions"),
    ("io.k8s.api.apiserverinternal.v1alpha1.ServerStorageVersion", "decodableVersions"),
    ("io.k8s.api.apiserverinternal.v1alpha1.ServerStorageVersion", "servedVersions"),
    ("io.k8s.api.apiserverinternal.v1alpha1.StorageVersionStatus", "conditions"),
    ("io.k8s.api.apiserverinternal.v1alpha1.StorageVersionStatus", "storageVersions"),
    ("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", "values"),
    ("io.k8s.api.batch.v1.UncountedTerminatedPods", "failed"),
    ("io.k8s.api.batch.v1.UncountedTerminatedPods", "succeeded"),
    ("io.k8s.api.certificates.v1.CertificateSigningRequestStatus", "conditions"),
    ("io.k8s.api.core.v1.ContainerRestartRuleOnExitCodes", "values"),
    ("io.k8s.api.core.v1.ResourceRequirements", "claims"),
    ("io.k8s.api.core.v1.ResourceStatus", "resources"),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses"),
    ("io.k8s.api.flowcontrol.v1.NonResourcePolicyRule", "nonResourceURLs"),
    ("io.k8s.api.flowcontrol.v1.NonResourcePolicyRule", "verbs"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "apiGroups"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "namespaces"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "resources"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "verbs"),
    ("io.k8s.api.resource.v1.AllocatedDeviceStatus", "conditions"),
    ("io.k8s.api.resource.v1beta1.AllocatedDeviceStatus", "conditions"),
    ("io.k8s.api.resource.v1beta2.AllocatedDeviceStatus", "conditions"),
    ("io.k8s.api.scheduling.v1alpha1.WorkloadSpec", "podGroups"),
    ("io.k8s.api.storage.v1.CSIDriverSpec", "volumeLifecycleModes"),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus", "conditions"),
]

# 3. Fields whose patch strategy k8s-openapi cannot express at all (retainKeys), or lists with
#    a patch strategy that k8s-openapi records with different keys.
SMP_EXTRA = [
    # A Deployment switching from RollingUpdate to Recreate must drop rollingUpdate: retainKeys
    # clears every key of the strategy the patch does not mention.
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
    # Volumes (and claims) switch source type the same way: `emptyDir` -> `hostPath`.
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name"),
    # A PDB selector is replaced whole, never merged key by key.
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", "replace", None),
]

# 4. Lists that k8s-openapi records with a different SSA list type than upstream's markers.
SSA_TYPE = [
    # k8s-openapi keys volumeClaimTemplates on metadata.name by a local override; upstream's
    # schema leaves the list atomic.
    ("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates", ("atomic",)),
    # Merge-keyed for SMP but +listType=atomic for server-side apply.
    ("io.k8s.api.batch.v1.JobStatus", "conditions", ("atomic",)),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", ("atomic",)),
]

for d, f, keys in SSA_MULTI_KEYS:
    OVERRIDES.append(_ssa_keys(d, f, keys, "ssa keys: upstream +listMapKey"))
for d, f in SMP_REPLACE:
    OVERRIDES.append(_smp_none(d, f, "no patchStrategy tag upstream: SMP replaces"))
for d, f, smp, key in SMP_EXTRA:
    OVERRIDES.append((d, f, {"smp": smp, "key": key}, f"upstream patchStrategy:{smp!r}"))
for d, f, ssa in SSA_TYPE:
    OVERRIDES.append((d, f, {"ssa": ssa}, "upstream +listType"))


# ---------------------------------------------------------------------------------------------
# Reading k8s-openapi
# ---------------------------------------------------------------------------------------------

PRIMITIVES = {
    "bool", "i32", "i64", "f64", "std::string::String", "crate::ByteString",
    "crate::serde_json::Value",
}


def find_k8s_openapi(explicit):
    if explicit:
        return explicit
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--offline"],
            check=True, capture_output=True, text=True,
        ).stdout
        for pkg in json.loads(out)["packages"]:
            if pkg["name"] == "k8s-openapi" and pkg["version"] == K8S_OPENAPI_VERSION:
                return os.path.join(os.path.dirname(pkg["manifest_path"]), "src", K8S_FEATURE)
    except (OSError, subprocess.CalledProcessError, KeyError, json.JSONDecodeError):
        pass
    home = os.path.expanduser("~/.cargo/registry/src")
    found = glob.glob(os.path.join(home, "*", f"k8s-openapi-{K8S_OPENAPI_VERSION}", "src", K8S_FEATURE))
    if not found:
        sys.exit(f"k8s-openapi {K8S_OPENAPI_VERSION} source not found; pass --k8s-openapi DIR")
    return found[0]


class Definition:
    def __init__(self, name, module, rust_name, kind):
        self.name = name          # io.k8s.api.core.v1.PodSpec
        self.module = module      # crate::api::core::v1
        self.rust_name = rust_name
        self.kind = kind          # "struct" (named fields), "newtype", "enum"
        self.fields = []          # [(rust field, rust type)]
        self.json_names = {}      # rust field -> json name
        self.merge = {}           # rust field -> ("default",) | ("atomic",) | ("set",) | ("map", [rust keys]) | ("mapatomic",) | ("granular",)
        self.resource = None      # (group, version, kind, plural)


def block(text, start):
    """The text from `start` to the first line that is exactly `}` (a top-level item's end)."""
    end = text.find("\n}\n", start)
    return text[start:end if end >= 0 else len(text)]


def read_k8s_openapi(root):
    defs = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.rs"), recursive=True)):
        rel = os.path.relpath(path, root)
        if os.path.basename(rel) == "mod.rs":
            continue
        text = open(path, encoding="utf-8").read()
        m = re.match(r"// Generated from definition (\S+)\n", text)
        if not m:
            continue
        name = m.group(1)
        module = "crate::" + "::".join(os.path.dirname(rel).split(os.sep))
        s = re.search(r"^pub struct (\w+) \{\n", text, re.M)
        if s:
            d = Definition(name, module, s.group(1), "struct")
            for fm in re.finditer(r"^    pub (\w+): (.+),$", block(text, s.start()), re.M):
                d.fields.append((fm.group(1), fm.group(2)))
        else:
            s = re.search(r"^pub (struct|enum) (\w+)", text, re.M)
            if not s:
                continue
            d = Definition(name, module, s.group(2), "newtype" if s.group(1) == "struct" else "enum")
        for jm in re.finditer(r'^\s+"([^"]+)" => Field::Key_(\w+),$', text, re.M):
            d.json_names[jm.group(2)] = jm.group(1)
        dm = re.search(r"^impl crate::DeepMerge for \w+ \{\n", text, re.M)
        if dm:
            body = block(text, dm.start())
            for mm in re.finditer(
                r"crate::(?:DeepMerge::merge_from|merge_strategies::(list|map)::(\w+))\(\s*&mut self\.(\w+),"
                r"\s*other\.\w+(?:,\s*&\[(.*?)\],)?",
                body, re.S,
            ):
                container, strategy, field, keys = mm.groups()
                if container is None:
                    d.merge[field] = ("default",)
                elif container == "list" and strategy == "map":
                    d.merge[field] = ("map", re.findall(r"lhs\.(\w+) ==", keys or ""))
                elif container == "list":
                    d.merge[field] = (strategy,)
                else:
                    d.merge[field] = ("mapatomic",) if strategy == "atomic" else ("granular",)
        rm = re.search(r"^impl crate::Resource for \w+ \{\n", text, re.M)
        if rm:
            body = block(text, rm.start())
            consts = dict(re.findall(r"const (\w+): &'static str = \"([^\"]*)\";", body))
            d.resource = (consts["GROUP"], consts["VERSION"], consts["KIND"], consts["URL_PATH_SEGMENT"])
        defs[name] = d
    return defs


def parse_type(ty, by_rust_path):
    """A Rust field type -> ("scalar",) | ("object", def) | ("list", inner) | ("map", inner)."""
    ty = ty.strip()
    for wrapper in ("Option<", "std::boxed::Box<"):
        if ty.startswith(wrapper) and ty.endswith(">"):
            return parse_type(ty[len(wrapper):-1], by_rust_path)
    if ty.startswith("std::vec::Vec<") and ty.endswith(">"):
        return ("list", parse_type(ty[len("std::vec::Vec<"):-1], by_rust_path))
    prefix = "std::collections::BTreeMap<std::string::String, "
    if ty.startswith(prefix) and ty.endswith(">"):
        return ("map", parse_type(ty[len(prefix):-1], by_rust_path))
    if ty in PRIMITIVES:
        return ("scalar",)
    d = by_rust_path.get(ty)
    if d is None:
        raise SystemExit(f"unknown field type {ty}")
    if d.kind == "struct":
        return ("object", d.name)
    # Quantity, Time, IntOrString, RawExtension, JSON, ...: serialized as one JSON value.
    return ("scalar",)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


class Field:
    def __init__(self, json_name, shape):
        self.json = json_name
        self.shape = shape       # parse_type result
        self.ssa = None          # lists: ("atomic",) | ("set",) | ("map", [json keys])
        self.map_type = None     # maps: "atomic" | "granular"
        self.smp = ""            # "", "merge", "retainKeys", "merge,retainKeys", "replace"
        self.key = None          # SMP patchMergeKey
        self.notes = []


def build(defs):
    by_rust_path = {f"{d.module}::{d.rust_name}": d for d in defs.values()}
    table = {}
    for d in defs.values():
        if d.kind != "struct":
            continue
        fields = {}
        for rust, ty in d.fields:
            json_name = d.json_names.get(rust)
            if json_name is None:
                raise SystemExit(f"{d.name}.{rust}: no serde name")
            f = Field(json_name, parse_type(ty, by_rust_path))
            merge = d.merge.get(rust, ("default",))
            if f.shape[0] == "list":
                if merge[0] == "map":
                    item = f.shape[1]
                    item_def = defs[item[1]] if item[0] == "object" else None
                    keys = [item_def.json_names[k] if item_def else k for k in merge[1]]
                    f.ssa = ("map", keys)
                    if len(keys) == 1:
                        # k8s-openapi prefers the patch merge key; a single key is SMP's.
                        f.smp, f.key = "merge", keys[0]
                elif merge[0] == "set":
                    f.ssa = ("set",)
                    f.smp = "merge"
                else:
                    f.ssa = ("atomic",)
            elif f.shape[0] == "map":
                f.map_type = "atomic" if merge[0] == "mapatomic" else "granular"
            fields[json_name] = f
        table[d.name] = fields
    return table


def apply_overrides(table):
    for definition, field, changes, why in OVERRIDES:
        f = table.get(definition, {}).get(field)
        if f is None:
            raise SystemExit(f"override for unknown field {definition}.{field}")
        changed = False
        if "ssa" in changes and f.ssa != changes["ssa"]:
            f.ssa, changed = changes["ssa"], True
        if "smp" in changes and f.smp != changes["smp"]:
            f.smp, changed = changes["smp"], True
        if "key" in changes and f.key != changes["key"]:
            f.key, changed = changes["key"], True
        if not changed:
            raise SystemExit(f"stale override {definition}.{field}: {changes}")
        f.notes.append(why)


# ---------------------------------------------------------------------------------------------
# Cross-check against the Go sources
# ---------------------------------------------------------------------------------------------

GO_TREES = [
    # (directory under --check-go, definition prefix for a package directory relative to it)
    ("api", lambda rel: "io.k8s.api." + rel.replace(os.sep, ".")),
    ("apimachinery/pkg/apis/meta/v1", lambda rel: "io.k8s.apimachinery.pkg.apis.meta.v1"),
    ("apiextensions/pkg/apis/apiextensions/v1",
     lambda rel: "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1"),
    ("aggregator/pkg/apis/apiregistration/v1",
     lambda rel: "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1"),
]


def read_go(root):
    """{definition: {json field: {"smp", "key", "list", "keys", "map"}}} from Go types."""
    structs = {}  # (package prefix, type) -> [(json or None, go type, info)]
    for tree, prefix_of in GO_TREES:
        base = os.path.join(root, tree)
        for path in glob.glob(os.path.join(base, "**", "*.go"), recursive=True):
            name = os.path.basename(path)
            if name.endswith("_test.go") or name.startswith("zz_generated") or name.startswith("generated"):
                continue
            rel = os.path.relpath(os.path.dirname(path), base)
            prefix = prefix_of(rel)
            text = open(path, encoding="utf-8").read()
            for sm in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", text, re.M | re.S):
                fields, comments = [], []
                for line in sm.group(2).split("\n"):
                    line = line.strip()
                    if line.startswith("//"):
                        comments.append(line)
                        continue
                    fm = re.match(r"^(?:(\w+)\s+)?([\w.\[\]*]+)\s+`(.*)`", line)
                    if not fm:
                        comments = []
                        continue
                    tag = fm.group(3)
                    jm = re.search(r'json:"([^"]*)"', tag)
                    json_name = jm.group(1).split(",")[0] if jm else None
                    info = {
                        "smp": (re.search(r'patchStrategy:"([^"]*)"', tag) or [None, ""])[1],
                        "key": (re.search(r'patchMergeKey:"([^"]*)"', tag) or [None, None])[1],
                        "list": None, "keys": [], "map": None,
                    }
                    for c in comments:
                        if (m := re.match(r"//\s*\+listType=(\w+)", c)):
                            info["list"] = m.group(1)
                        elif (m := re.match(r"//\s*\+listMapKey=(\w+)", c)):
                            info["keys"].append(m.group(1))
                        elif (m := re.match(r"//\s*\+mapType=(\w+)", c)):
                            info["map"] = m.group(1)
                    inline = (fm.group(1) is None and jm is None) or json_name == ""
                    fields.append((None if inline else json_name, fm.group(2), info))
                    comments = []
                structs[(prefix, sm.group(1))] = fields
    out = {}

    def resolve(prefix, type_name, seen):
        result = {}
        for json_name, go_type, info in structs.get((prefix, type_name), []):
            if json_name is None:  # embedded: promote the embedded struct's fields
                t = go_type.lstrip("*")
                if "." in t:
                    continue  # metav1.TypeMeta / ObjectMeta embedded inline: no list fields of ours
                if t not in seen:
                    result.update(resolve(prefix, t, seen | {t}))
                continue
            if json_name == "-":
                continue
            result[json_name] = info
        return result

    for prefix, type_name in structs:
        out[f"{prefix}.{type_name}"] = resolve(prefix, type_name, {type_name})
    return out


def check_go(table, root):
    go = read_go(root)
    problems = []
    for definition, fields in sorted(table.items()):
        gofields = go.get(definition)
        if gofields is None:
            continue
        for json_name, f in sorted(fields.items()):
            g = gofields.get(json_name)
            if g is None:
                continue
            if (f.smp, f.key) != (g["smp"], g["key"]):
                problems.append(f"SMP {definition}.{json_name}: table {f.smp!r}/{f.key!r} go {g['smp']!r}/{g['key']!r}")
            if f.shape[0] == "list":
                if g["list"] == "map":
                    want = ("map", g["keys"])
                elif g["list"] in ("set", "atomic"):
                    want = (g["list"],)
                elif "merge" in g["smp"].split(","):
                    # upstream schemaconv: a merge strategy without +listType keys on the
                    # patch merge key (or is a set without one).
                    want = ("map", [g["key"]]) if g["key"] else ("set",)
                else:
                    want = ("atomic",)
                if f.ssa != want:
                    problems.append(f"SSA {definition}.{json_name}: table {f.ssa} go {want}")
            if f.shape[0] == "map" and g["map"] and g["map"] != f.map_type:
                problems.append(f"MAP {definition}.{json_name}: table {f.map_type} go {g['map']}")
    missing = sorted(d for d in table if d.startswith("io.k8s.api.") and d not in go)
    for d in missing:
        problems.append(f"NOGO {d}")
    return problems


# ---------------------------------------------------------------------------------------------
# Rust output
# ---------------------------------------------------------------------------------------------


def rust_str(s):
    return json.dumps(s)


def rust_value(shape):
    kind = shape[0]
    if kind == "scalar":
        return "Value::Scalar"
    if kind == "object":
        return f"Value::Object({rust_str(shape[1])})"
    inner = shape[1]
    inner_rust = {"scalar": "Item::Scalar", "object": None, "list": "Item::List", "map": "Item::Map"}[inner[0]]
    if inner_rust is None:
        inner_rust = f"Item::Object({rust_str(inner[1])})"
    return f"Value::{'List' if kind == 'list' else 'Map'}({inner_rust})"


def rust_list_type(ssa):
    if ssa is None:
        return "None"
    if ssa[0] == "map":
        return "Some(ListType::Map(&[" + ", ".join(rust_str(k) for k in ssa[1]) + "]))"
    return {"set": "Some(ListType::Set)", "atomic": "Some(ListType::Atomic)"}[ssa[0]]


def rust_strategy(smp):
    return {
        "": "PatchStrategy::None",
        "merge": "PatchStrategy::Merge",
        "replace": "PatchStrategy::Replace",
        "retainKeys": "PatchStrategy::RetainKeys",
        "merge,retainKeys": "PatchStrategy::MergeRetainKeys",
    }[smp]


def render(defs, table, source):
    out = []
    out.append("// @generated by tools/gen-listmeta.py from k8s-openapi "
               f"{K8S_OPENAPI_VERSION} ({K8S_FEATURE}); do not edit.")
    out.append("// Regenerate from the repository root with `python3 tools/gen-listmeta.py`;")
    out.append("// the script's OVERRIDES table documents every deviation from k8s-openapi.")
    out.append(f"// Source: k8s-openapi/src/{K8S_FEATURE} ({len(table)} definitions).")
    out.append("")
    out.append("use super::{Definition, FieldMeta, FieldType as Value, ItemType as Item, KindEntry, ListType, MapType};")
    out.append("use super::{PatchStrategy, object, scalar};")
    out.append("")
    out.append("/// Every object definition, sorted by name; fields sorted by JSON name.")
    out.append("pub(super) static DEFINITIONS: &[Definition] = &[")
    for name in sorted(table):
        fields = table[name]
        out.append(f"    Definition {{ name: {rust_str(name)}, fields: &[")
        for json_name in sorted(fields):
            f = fields[json_name]
            for note in f.notes:
                out.append(f"        // override: {note}")
            map_type = {None: "None", "atomic": "Some(MapType::Atomic)", "granular": "Some(MapType::Granular)"}[f.map_type]
            key = "None" if f.key is None else f"Some({rust_str(f.key)})"
            plain = f.ssa is None and f.map_type is None and f.smp == "" and f.key is None
            if plain and f.shape[0] == "scalar":
                out.append(f"        scalar({rust_str(json_name)}),")
            elif plain and f.shape[0] == "object":
                out.append(f"        object({rust_str(json_name)}, {rust_str(f.shape[1])}),")
            else:
                out.append(
                    f"        FieldMeta {{ name: {rust_str(json_name)}, value: {rust_value(f.shape)}, "
                    f"list_type: {rust_list_type(f.ssa)}, map_type: {map_type}, "
                    f"patch_strategy: {rust_strategy(f.smp)}, patch_merge_key: {key} }},"
                )
        out.append("    ] },")
    out.append("];")
    out.append("")
    kinds = sorted(
        (d.resource, d.name) for d in defs.values() if d.resource is not None
    )
    out.append("/// Every kind k8s-openapi knows, sorted by (group, version, kind).")
    out.append("pub(super) static KINDS: &[KindEntry] = &[")
    for (group, version, kind, plural), name in kinds:
        out.append(
            f"    KindEntry {{ group: {rust_str(group)}, version: {rust_str(version)}, "
            f"kind: {rust_str(kind)}, plural: {rust_str(plural)}, definition: {rust_str(name)} }},"
        )
    out.append("];")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k8s-openapi", help=f"k8s-openapi src/{K8S_FEATURE} directory")
    parser.add_argument("--check-go", metavar="DIR", help="cross-check against Go type sources")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args()

    source = find_k8s_openapi(args.k8s_openapi)
    defs = read_k8s_openapi(source)
    table = build(defs)
    apply_overrides(table)
    if args.check_go:
        problems = check_go(table, args.check_go)
        for p in problems:
            print(p)
        print(f"{len(problems)} difference(s)", file=sys.stderr)
    text = render(defs, table, source)
    if args.stdout:
        sys.stdout.write(text)
    elif not args.check_go:
        with open(OUTPUT, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
