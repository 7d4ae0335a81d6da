-- nginx_app.lua: the content handlers that nginx_test.lua serves through
-- monlight.openresty.run(). The failing lines are found by their text.

local app = {}

function app.user()
    local id = ngx.var.uri:match("/users/(%d+)")
    ngx.say("user ", id)
end

local function charge(amount)
    if amount > 100 then
        error("checkout failed: card declined")
    end
end

function app.fail()
    charge(500)
end

function app.fail_other()
    local order = nil
    return order.total
end

return app
