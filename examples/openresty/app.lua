-- app.lua: the content handlers of the OpenResty example (nginx.conf).
-- Each runs through monlight.openresty.run(), which reports an error it
-- raises and responds with 500.

local app = {}

local USERS = { ["1"] = "Ada", ["2"] = "Grace" }

function app.hello()
    ngx.say("hello")
end

function app.user()
    local id = ngx.var.uri:match("^/users/(%d+)$")
    local name = USERS[id]
    if not name then
        return ngx.exit(ngx.HTTP_NOT_FOUND)
    end
    ngx.say("user ", id, ": ", name)
end

local function apply_discount(cart, code)
    -- A cart without a discount table fails here: the error this example
    -- reports, grouped by this line.
    return cart.discounts[code]
end

function app.checkout()
    local cart = { items = 2 }
    local discount = apply_discount(cart, ngx.var.arg_code or "none")
    ngx.say("discount ", tostring(discount))
end

return app
