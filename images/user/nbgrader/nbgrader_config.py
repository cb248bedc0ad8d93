# nbgrader's settings in a swarmhub server (docs/nbgrader.md), from what the hub's spawner
# set for this server: the course, its exchange, and for a grader the course directory and
# the gradebook. A student's server has no course directory and no gradebook: neither is
# mounted into it nor reachable from it, whatever this file says.
import os

c = get_config()  # noqa: F821 (provided by nbgrader)
course = os.environ.get("NBGRADER_COURSE_ID", "")
if course:
    c.CourseDirectory.course_id = course
    c.Exchange.root = os.environ.get("NBGRADER_EXCHANGE", "/srv/nbgrader/exchange")
    if os.environ.get("SWARMHUB_COURSE_ROLE") == "grader":
        c.CourseDirectory.root = "/srv/nbgrader/course"
        # Every server runs as jovyan: the files' owner names no student. Who submitted is
        # the directory the hub mounted for them (swarmhub-collect-submissions checks it).
        c.ExchangeCollect.check_owner = False
        if os.environ.get("NBGRADER_DB_URL"):
            c.CourseDirectory.db_url = os.environ["NBGRADER_DB_URL"]
