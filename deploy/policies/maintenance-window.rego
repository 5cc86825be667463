# Maintenance identities only between 22:00 and 06:00 on weekdays.
#
# The hours are those of the task's start on the server's wall clock
# ([tasks] time_zone, e.g. "+02:00"): the start must fall between 22:00 and
# 06:00 on a Monday to Friday, and the task must end by 06:00. A task
# requested for tonight is judged by tonight, not by when it was asked.
package lanyard.tasks

import rego.v1

weekdays := {"monday", "tuesday", "wednesday", "thursday", "friday"}

start_minute := (input.start.hour * 60) + input.start.minute

# Minutes from the start until 06:00.
minutes_left := ((24 * 60) - start_minute) + (6 * 60) if input.start.hour >= 22

minutes_left := (6 * 60) - start_minute if input.start.hour < 6

in_window if {
	input.start.weekday in weekdays
	minutes_left > 0
}

decision := {
	"allow": true,
	"rule": "maintenance_window",
	"reason": "starts inside the weekday 22:00-06:00 maintenance window and ends by 06:00",
	"max_ttl_seconds": minutes_left * 60,
} if {
	in_window
} else := {
	"allow": false,
	"rule": "maintenance_window",
	"reason": sprintf(
		"maintenance tasks start only between 22:00 and 06:00 on weekdays (UTC%s); this one starts on %s at hour %d",
		[input.start.time_zone, input.start.weekday, input.start.hour],
	),
}
