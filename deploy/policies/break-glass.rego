# Break-glass only for on-call, at most 30 minutes.
#
# Break-glass tasks are active at once, without approval, and wait for a
# review: only members of the "oncall" group may open one, for at most
# 30 minutes. Ordinary tasks need one approver.
package lanyard.tasks

import rego.v1

on_call if "oncall" in input.requester.groups

decision := {
	"allow": false,
	"rule": "break_glass_on_call",
	"reason": "break-glass is for members of the oncall group only",
} if {
	input.break_glass
	not on_call
} else := {
	"allow": true,
	"rule": "break_glass_on_call",
	"reason": "on-call break-glass, at most 30 minutes",
	"max_ttl_seconds": 1800,
} if {
	input.break_glass
} else := {
	"allow": true,
	"rule": "default",
	"reason": "ordinary task, one approver",
}
