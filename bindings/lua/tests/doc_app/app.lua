-- app.lua: the module that the nginx configuration in docs/lua.md
-- requires as "app"; nginx_test.lua starts nginx with that configuration.

local app = {}

function app.show_user()
    ngx.say("user ", ngx.var.uri:match("^/users/(%d+)$"))
end

return app
