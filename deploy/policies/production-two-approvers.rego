# Production identities need two approvers from the change board.
#
# A task for an ID under /prod/ becomes active only once two distinct
# members of the "change-board" group (neither of them the requester) have
# approved it; other tasks need one approver.
package lanyard.tasks

import rego.v1

# spiffe://<trust domain>/prod/... splits into
# ["spiffe:", "", "<trust domain>", "prod", ...].
production if split(input.spiffe_id, "/")[3] == "prod"

decision := {
	"allow": true,
	"rule": "production_change_board",
	"reason": "production identities need two change-board approvers",
	"approvals_required": 2,
	"approver_groups": ["change-board"],
} if {
	production
} else := {
	"allow": true,
	"rule": "default",
	"reason": "one approver",
	"approvals_required": 1,
}
