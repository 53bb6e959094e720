"""Fails unless every Autobahn case is OK, or is listed in allowed.txt with its result."""
import collections
import json
import sys

index, allowed_path = sys.argv[1], sys.argv[2]
allowed = {}
for line in open(allowed_path):
    line = line.split("#", 1)[0].strip()
    if line:
        case, result = line.split()[:2]
        allowed[case] = result

results = json.load(open(index))
bad = []
for agent, cases in results.items():
    count = collections.Counter(c["behavior"] for c in cases.values())
    print("autobahn: %s: %d cases: %s" % (agent, len(cases), ", ".join("%s %d" % kv for kv in sorted(count.items()))))
    for case, c in sorted(cases.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
        ok = c["behavior"] == "OK" or allowed.get(case) == c["behavior"]
        close_ok = c["behaviorClose"] in ("OK", "INFORMATIONAL")
        if not (ok and close_ok):
            bad.append("%s: %s (close: %s)" % (case, c["behavior"], c["behaviorClose"]))
        elif c["behavior"] != "OK":
            print("autobahn:   %s %s (allowed)" % (case, c["behavior"]))
    if len(cases) < 290:
        bad.append("only %d cases ran" % len(cases))
if bad:
    print("autobahn: FAILED:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("autobahn: ok")
