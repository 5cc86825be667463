# Vendor tasks: at most one hour, and only towards the audiences their
# ticket names.
#
# A requester in the "vendors" group must name the services the identity
# may be presented to (--audience), each of them listed for the ticket
# below; the window is capped at one hour. Tasks of other operators are
# not restricted here.
package lanyard.tasks

import rego.v1

# The audiences each vendor ticket covers, as the change system lists them.
ticket_audiences := {
	"VND-1001": {"spiffe://example.org/billing/db"},
	"VND-1002": {"spiffe://example.org/billing/db", "spiffe://example.org/billing/api"},
}

vendor if "vendors" in input.requester.groups

unnamed contains audience if {
	some audience in input.audiences
	not audience in object.get(ticket_audiences, input.ticket, set())
}

decision := {
	"allow": false,
	"rule": "vendor_audiences",
	"reason": "vendor tasks must name their audiences (--audience)",
} if {
	vendor
	count(input.audiences) == 0
} else := {
	"allow": false,
	"rule": "vendor_audiences",
	"reason": sprintf("ticket %s does not name audience(s) %v", [input.ticket, sort(unnamed)]),
} if {
	vendor
	count(unnamed) > 0
} else := {
	"allow": true,
	"rule": "vendor_one_hour",
	"reason": "vendor task towards the audiences its ticket names, at most 1h",
	"max_ttl_seconds": 3600,
} if {
	vendor
} else := {
	"allow": true,
	"rule": "default",
	"reason": "not a vendor task",
}
