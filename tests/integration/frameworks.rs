//! Real frameworks (issue 2 point 8): a Flask app from tests/apps and a Django project
//! made with `django-admin startproject` at test time, both served from the test
//! virtualenv (`RGUNICORN_TEST_VENV`, created by `tests/run`).

use std::fs;
use std::process::Command;

use crate::support::{venv, Server, TempDir};

/// The Flask app: a JSON route, a form POST (urlencoded, and chunked), and a 404.
#[test]
fn flask_app_serves_json_form_and_404() {
    let s = Server::builder("flask")
        .venv()
        .args(["-w", "2", "flaskapp:app"])
        .start();

    let r = s.get("/json?x=1&name=r%C3%A9");
    assert_eq!(r.status, 200, "{}\n{}", r.body_str(), s.stderr());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.body_str();
    assert!(body.contains("\"framework\":\"flask\""), "{body}");
    assert!(body.contains("\"x\":\"1\""), "{body}");
    assert!(
        body.contains("\"name\":\"r\\u00e9\""),
        "UTF-8 query decoded by Flask: {body}"
    );

    let form = b"name=alice&other=2";
    let r = s.request(crate::support::post(
        "/form",
        form,
        "Content-Type: application/x-www-form-urlencoded\r\n",
    ));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "name=alice count=2");

    // The same form with a chunked body (Werkzeug reads to EOF via wsgi.input_terminated).
    let r = s.request(
        "POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nname=\r\n3\r\nbob\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "name=bob count=1");

    let r = s.get("/no/such/page");
    assert_eq!(r.status, 404);
    assert!(r.body_str().contains("Not Found"), "{}", r.body_str());

    // GET on a POST-only route.
    assert_eq!(s.get("/form").status, 405);
}

/// A Django project created by `django-admin startproject`, with one added view, served
/// with `--chdir` and `project.wsgi:application` (DEBUG off, ALLOWED_HOSTS set).
#[test]
fn django_project_serves_view_and_404() {
    let venv = venv();
    let dir = TempDir::new("django");
    let project = dir.join("site");
    fs::create_dir_all(&project).expect("project dir");
    let out = Command::new(venv.join("bin/django-admin"))
        .args(["startproject", "proj"])
        .arg(&project)
        .env("VIRTUAL_ENV", &venv)
        .output()
        .expect("run django-admin");
    assert!(
        out.status.success(),
        "django-admin startproject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = project.join("proj/settings.py");
    let mut text = fs::read_to_string(&settings).expect("settings.py");
    text = text.replace("DEBUG = True", "DEBUG = False");
    text = text.replace(
        "ALLOWED_HOSTS = []",
        "ALLOWED_HOSTS = ['127.0.0.1', 'localhost']",
    );
    fs::write(&settings, text).expect("write settings.py");
    fs::write(
        project.join("proj/views.py"),
        "from django.http import JsonResponse\n\n\n\
         def hello(request):\n    \
         return JsonResponse({'framework': 'django', 'method': request.method,\n        \
         'q': request.GET.get('q', ''), 'script_name': request.META.get('SCRIPT_NAME')})\n",
    )
    .expect("views.py");
    let urls = project.join("proj/urls.py");
    let mut text = fs::read_to_string(&urls).expect("urls.py");
    text.push_str(
        "\nfrom . import views  # noqa: E402\n\nurlpatterns += [path('hello/', views.hello)]\n",
    );
    fs::write(&urls, text).expect("write urls.py");

    let elsewhere = TempDir::new("django-cwd");
    let s = Server::builder("django")
        .venv()
        .cwd(elsewhere.path())
        .args([
            "-w",
            "2",
            "--chdir",
            &project.to_string_lossy(),
            "proj.wsgi:application",
        ])
        .start();

    let r = s.get("/hello/?q=abc");
    assert_eq!(r.status, 200, "{}\n{}", r.body_str(), s.stderr());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.body_str();
    assert!(body.contains("\"framework\": \"django\""), "{body}");
    assert!(body.contains("\"method\": \"GET\""), "{body}");
    assert!(body.contains("\"q\": \"abc\""), "{body}");

    // Without the trailing slash Django redirects (CommonMiddleware APPEND_SLASH).
    let r = s.get("/hello");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("/hello/"));

    // The default 404 page with DEBUG off.
    let r = s.get("/missing/");
    assert_eq!(r.status, 404, "{}", r.body_str());
    assert!(r.body_str().contains("Not Found"), "{}", r.body_str());

    // A host outside ALLOWED_HOSTS is refused by Django with 400.
    let r = s.request("GET /hello/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);

    // POST without a CSRF token is refused by Django's middleware (403): the body and
    // headers reached Django intact enough for it to decide.
    let r = s.request(crate::support::post(
        "/hello/",
        b"a=1",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    ));
    assert_eq!(r.status, 403, "{}", r.body_str());
}
