"""A `helm` stand-in on Helm's own engine, for the test suite.

No `helm` binary can be installed from the registries this project's machines reach, but
PyPI's `helm-python-sdk` carries Helm v4's Go SDK (`libhelm_c`). This program answers the
`helm` commands threeport's renderer runs, and the ones the tests use to build a chart
repository, with the same arguments and output shape as the real CLI:

    helm version [--short]
    helm pull CHART --repo URL [--version V] [--destination DIR]
    helm pull oci://HOST/PATH/CHART [--version V] [--destination DIR]
    helm show chart ARCHIVE
    helm template NAME CHART [--namespace NS] [--values FILE]... [--include-crds] [--skip-tests]
    helm package DIR [--version V] [--destination DIR]
    helm repo index DIR [--url URL]

Rendering, values coalescing, schema validation, pulling and packaging are the SDK's (Helm's
own code); this file only parses arguments, merges `--values` files in order as the CLI does,
and prints what the CLI prints. Errors go to stderr as `Error: <message>`, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import helm_python as helm

# Helm's install order of kinds (releaseutil.InstallOrder), which `helm template` prints in.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


def merge_maps(a: dict, b: dict) -> dict:
    """The CLI's merge of `--values` files: later wins, maps merged key by key."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = value
    return out


def documents(text: str) -> list[str]:
    """A rendered file's YAML documents (non-empty ones)."""
    parts, current = [], []
    for line in text.splitlines():
        if line.strip() == "---" or line.startswith("--- "):
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    return [p for p in parts if any(l.strip() and not l.lstrip().startswith("#") for l in p.splitlines())]


def kind_of(document: str) -> str:
    for line in document.splitlines():
        if line.startswith("kind:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    return ""


def is_hook(document: str) -> tuple[bool, bool]:
    """(a hook, a test hook)."""
    for line in document.splitlines():
        stripped = line.strip().replace('"', "").replace("'", "")
        if stripped.startswith("helm.sh/hook:"):
            events = [e.strip() for e in stripped.split(":", 1)[1].split(",")]
            return True, all(e.startswith("test") for e in events)
    return False, False


def cmd_version(args: argparse.Namespace) -> None:
    version = helm.helm_sdk_version()
    if args.short:
        print(f"{version}+helm-python-sdk")
    else:
        print(f'version.BuildInfo{{Version:"{version}", GitCommit:"", GitTreeState:"", '
              f'GoVersion:"", KubeClientVersion:""}}')


def cmd_pull(args: argparse.Namespace) -> None:
    destination = args.destination or os.getcwd()
    os.makedirs(destination, exist_ok=True)
    helm.pull(args.chart, repo_url=args.repo, version=args.version, destination=destination,
              plain_http=args.plain_http)


def cmd_show(args: argparse.Namespace) -> None:
    if args.what != "chart":
        raise helm.HelmError(f"helm show {args.what}: not supported by this stand-in")
    chart = helm.Chart.load(args.chart)
    # JSON is YAML: the real CLI prints Chart.yaml.
    print(json.dumps(chart.metadata, indent=2))


def cmd_template(args: argparse.Namespace) -> None:
    chart = helm.Chart.load(args.chart)
    values: dict = {}
    for path in args.values or []:
        with open(path, encoding="utf-8") as file:
            values = merge_maps(values, helm.values_from_yaml(file.read()) or {})
    rendered = chart.render(values, name=args.name, namespace=args.namespace,
                            is_install=True, revision=1)
    out = []
    if args.include_crds:
        for crd in chart.crds:
            out.append((crd["filename"], crd["data"]))
    manifests, hooks = [], []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for document in documents(rendered[path]):
            hook, test = is_hook(document)
            if test and args.skip_tests:
                continue
            (hooks if hook else manifests).append((path, document))
    rank = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    manifests.sort(key=lambda m: rank.get(kind_of(m[1]), len(INSTALL_ORDER)))
    for path, document in out + manifests + hooks:
        print(f"---\n# Source: {path}\n{document.strip()}")


def cmd_package(args: argparse.Namespace) -> None:
    path = helm.package(args.chart, destination=args.destination or os.getcwd(),
                        version=args.version)
    print(f"Successfully packaged chart and saved it to: {path}")


def cmd_repo(args: argparse.Namespace) -> None:
    if args.what != "index":
        raise helm.HelmError(f"helm repo {args.what}: not supported by this stand-in")
    helm.repo_index_generate(args.dir, base_url=args.url)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="helm")
    commands = top.add_subparsers(dest="command", required=True)
    version = commands.add_parser("version")
    version.add_argument("--short", action="store_true")
    version.set_defaults(run=cmd_version)
    pull = commands.add_parser("pull")
    pull.add_argument("chart")
    pull.add_argument("--repo")
    pull.add_argument("--version")
    pull.add_argument("--destination", "-d")
    pull.add_argument("--plain-http", action="store_true")
    pull.set_defaults(run=cmd_pull)
    show = commands.add_parser("show")
    show.add_argument("what")
    show.add_argument("chart")
    show.set_defaults(run=cmd_show)
    template = commands.add_parser("template")
    template.add_argument("name")
    template.add_argument("chart")
    template.add_argument("--namespace", "-n", default="default")
    template.add_argument("--values", "-f", action="append")
    template.add_argument("--include-crds", action="store_true")
    template.add_argument("--skip-tests", action="store_true")
    template.set_defaults(run=cmd_template)
    package = commands.add_parser("package")
    package.add_argument("chart")
    package.add_argument("--version")
    package.add_argument("--destination", "-d")
    package.set_defaults(run=cmd_package)
    repo = commands.add_parser("repo")
    repo.add_argument("what")
    repo.add_argument("dir")
    repo.add_argument("--url")
    repo.set_defaults(run=cmd_repo)
    return top


def main() -> int:
    args = parser().parse_args()
    try:
        args.run(args)
    except (helm.HelmError, OSError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
